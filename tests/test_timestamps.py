"""Timestamps and buckets (spec 4.3 and 5.4, semantics.md §3-4, decisions 1, 7 and 10).

The engine only shows bucket starts, so every parse case picks a value next to a 30-second
boundary (the smallest interval) and names the bucket it must land in: a value that is off by a
single millisecond, or rounded instead of floored, lands in the neighbouring bucket.
"""

from __future__ import annotations

from typing import Any

import pytest

import eventtally
from tests.support import (
    FIXED_NOW_DT,
    agg_def,
    bucket_starts,
    dumps,
    filter_def,
    ingest_def,
    make_engine,
    rows,
)

B0 = "2024-05-14T09:21:00Z"  # bucket holding 09:21:00.000 .. 09:21:29.999
B30 = "2024-05-14T09:21:30Z"  # bucket holding 09:21:30.000 .. 09:21:59.999
FALLBACK = FIXED_NOW_DT  # ingest time (the fixed clock), used when the timestamp is invalid

SECONDS_30 = ("SECOND", 30)


def land(value: Any, fmt: str, interval: tuple[str, int] = SECONDS_30) -> tuple[str, Any]:
    """(bucket start of one event whose ``@.t`` is ``value``, ingest stats)."""
    engine = make_engine(ingest_def(path="@.t", fmt=fmt), [filter_def(interval=interval)])
    stats = engine.ingest(dumps([{"t": value}]))
    (dt,) = bucket_starts(engine)
    return dt, stats


ISO_CASES = [
    # 0 to 9 fraction digits, floored to the millisecond
    ("2024-05-14T09:21:29Z", B0),
    ("2024-05-14T09:21:30Z", B30),
    ("2024-05-14T09:21:29.9Z", B0),
    ("2024-05-14T09:21:29.99Z", B0),
    ("2024-05-14T09:21:29.999Z", B0),
    ("2024-05-14T09:21:29.9999Z", B0),
    ("2024-05-14T09:21:29.99999Z", B0),
    ("2024-05-14T09:21:29.999999Z", B0),
    ("2024-05-14T09:21:29.9999999Z", B0),
    ("2024-05-14T09:21:29.99999999Z", B0),
    ("2024-05-14T09:21:29.999999999Z", B0),
    ("2024-05-14T09:21:30.000000001Z", B30),
    ("2024-05-14T09:21:30.0Z", B30),
    # offsets: Z, ±hh:mm, ±hhmm, lower-case t/z, space separator
    ("2024-05-14T09:21:30z", B30),
    ("2024-05-14t09:21:30Z", B30),
    ("2024-05-14 09:21:30Z", B30),
    ("2024-05-14T11:21:30+02:00", B30),
    ("2024-05-14T11:21:29.999+02:00", B0),
    ("2024-05-14T07:21:30-02:00", B30),
    ("2024-05-14T11:51:30+0230", B30),
    ("2024-05-14T06:51:30-0230", B30),
    ("2024-05-14T09:21:30+00:00", B30),
    ("2024-05-14T09:21:30-00:00", B30),
    ("2024-05-15T00:21:30+15:00", B30),
    ("2024-05-14T11:21:30+02", B30),
    ("2024-05-14T09:21:30-00", B30),
    # a leap second :60 is clamped to :59.999
    ("2024-05-14T09:21:60Z", B30),
    ("2016-12-31T23:59:60Z", "2016-12-31T23:59:30Z"),
    # no offset means UTC
    ("2024-05-14T09:21:30", B30),
    ("2024-05-14T09:21:29.999", B0),
    ("2024-05-14 09:21:30.5", B30),
    ("2024-05-14T09:21", B0),
    # a date alone is midnight UTC
    ("2024-05-14", "2024-05-14T00:00:00Z"),
    # leap day, pre-1970 and far dates
    ("2024-02-29T23:59:59.999Z", "2024-02-29T23:59:30Z"),
    ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:30Z"),
    ("1969-12-31T23:59:29.999Z", "1969-12-31T23:59:00Z"),
    ("1900-01-01T00:00:00Z", "1900-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:30Z"),
    # the example payloads of spec 4.3
    ("2023-10-15T03:53:25.459Z", "2023-10-15T03:53:00Z"),
    ("2023-10-16T21:03:49.46Z", "2023-10-16T21:03:30Z"),
]


@pytest.mark.parametrize(("value", "bucket"), ISO_CASES)
def test_iso_8601(value: str, bucket: str) -> None:
    """ISO 8601 / RFC 3339 with 0-9 fraction digits (floored), Z or offsets; no offset is UTC."""
    dt, stats = land(value, "ISO_8601")
    assert stats.timestamp_fallback == 0
    assert dt == bucket


UNIX_CASES = [
    # numbers
    (1715678489, "UNIX_SECONDS", B0),
    (1715678490, "UNIX_SECONDS", B30),
    (1715678489.999, "UNIX_SECONDS", B0),
    (1715678489.9999, "UNIX_SECONDS", B0),
    (1715678489999, "UNIX_MILLISECONDS", B0),
    (1715678490000, "UNIX_MILLISECONDS", B30),
    (1715678489999.9, "UNIX_MILLISECONDS", B0),
    (1715678489999999, "UNIX_MICROSECONDS", B0),
    (1715678490000000, "UNIX_MICROSECONDS", B30),
    (1715678489999999999, "UNIX_NANOSECONDS", B0),
    (1715678490000000000, "UNIX_NANOSECONDS", B30),
    # numeric strings
    ("1715678489", "UNIX_SECONDS", B0),
    ("1715678489.9999", "UNIX_SECONDS", B0),
    ("1715678490", "UNIX_SECONDS", B30),
    ("1.71567849e9", "UNIX_SECONDS", B30),
    ("1715678489999", "UNIX_MILLISECONDS", B0),
    ("1715678490000", "UNIX_MILLISECONDS", B30),
    ("1715678489999999", "UNIX_MICROSECONDS", B0),
    ("1715678489999999999", "UNIX_NANOSECONDS", B0),
    ("1715678490000000000", "UNIX_NANOSECONDS", B30),
    # pre-1970: floored toward minus infinity
    (-1, "UNIX_SECONDS", "1969-12-31T23:59:30Z"),
    (-0.001, "UNIX_SECONDS", "1969-12-31T23:59:30Z"),
    (-1, "UNIX_MILLISECONDS", "1969-12-31T23:59:30Z"),
    ("-30", "UNIX_SECONDS", "1969-12-31T23:59:30Z"),
    ("-30.001", "UNIX_SECONDS", "1969-12-31T23:59:00Z"),
    (0, "UNIX_SECONDS", "1970-01-01T00:00:00Z"),
    ("-0", "UNIX_MILLISECONDS", "1970-01-01T00:00:00Z"),
    (1e3, "UNIX_SECONDS", "1970-01-01T00:16:30Z"),
    # the spec's example: epoch milliseconds as a JSON number
    (1721491167001, "UNIX_MILLISECONDS", "2024-07-20T15:59:00Z"),
]


@pytest.mark.parametrize(("value", "fmt", "bucket"), UNIX_CASES)
def test_unix_formats(value: Any, fmt: str, bucket: str) -> None:
    """Unix seconds/ms/µs/ns as JSON numbers and numeric strings, scaled to ms and floored."""
    dt, stats = land(value, fmt)
    assert stats.timestamp_fallback == 0
    assert dt == bucket


AUTO_CASES = [
    # numbers by magnitude: < 1e11 seconds, < 1e14 ms, < 1e17 µs, else ns
    (1715678490, B30),
    (1715678489999, B0),
    (1715678489999999, B0),
    (1715678489999999999, B0),
    ("1715678490", B30),
    ("1715678489999", B0),
    ("2024-05-14T09:21:29.999Z", B0),
    ("2024-05-14T09:21:30", B30),
    # the thresholds themselves
    (99999999999, "5138-11-16T09:46:30Z"),  # seconds
    (100000000000, "1973-03-03T09:46:30Z"),  # milliseconds
    (99999999999999, "5138-11-16T09:46:30Z"),  # milliseconds
    (100000000000000, "1973-03-03T09:46:30Z"),  # microseconds
    (99999999999999999, "5138-11-16T09:46:30Z"),  # microseconds
    (100000000000000000, "1973-03-03T09:46:30Z"),  # nanoseconds
    (-1715678490, "1915-08-20T14:38:30Z"),  # magnitude decides: seconds
]


@pytest.mark.parametrize(("value", "bucket"), AUTO_CASES)
def test_auto_format(value: Any, bucket: str) -> None:
    """AUTO takes ISO strings and classifies numbers (and numeric strings) by magnitude."""
    dt, stats = land(value, "AUTO")
    assert stats.timestamp_fallback == 0
    assert dt == bucket


INVALID = [
    # (value, format) pairs that are missing or unparsable
    ("garbage", "ISO_8601"),
    ("", "ISO_8601"),
    ("2024-02-30T00:00:00Z", "ISO_8601"),
    ("2023-02-29T00:00:00Z", "ISO_8601"),
    ("2024-13-01T00:00:00Z", "ISO_8601"),
    ("2024-05-14T24:00:00Z", "ISO_8601"),
    ("2024-05-14T09:60:00Z", "ISO_8601"),
    ("2024-05-14T09:21:30.1234567891Z", "ISO_8601"),
    ("2024-05-14T09:21:30.Z", "ISO_8601"),
    ("2024-05-14T09:21:30+2", "ISO_8601"),
    ("2024-05-14T09:21:30 UTC", "ISO_8601"),
    ("2024-05-14T09:21:61Z", "ISO_8601"),
    ("2024-05-14T09:21:30,5Z", "ISO_8601"),
    ("2024-05-14T09:21:30Z ", "ISO_8601"),
    ("0000-01-01T00:30:00+01:00", "ISO_8601"),
    ("9999-12-31T23:30:00-01:00", "ISO_8601"),
    ("10000-01-01T00:00:00Z", "ISO_8601"),
    ("14/05/2024", "ISO_8601"),
    (" 2024-05-14T09:21:30Z", "ISO_8601"),
    (1715678490, "ISO_8601"),
    (None, "ISO_8601"),
    (True, "UNIX_SECONDS"),
    ("abc", "UNIX_SECONDS"),
    (" 1715678490", "UNIX_SECONDS"),
    ("0x10", "UNIX_SECONDS"),
    ("1715678490s", "UNIX_SECONDS"),
    ("2024-05-14T09:21:30Z", "UNIX_MILLISECONDS"),
    ([1715678490], "UNIX_SECONDS"),
    ({"s": 1715678490}, "UNIX_SECONDS"),
    (1e20, "UNIX_SECONDS"),
    (253402300800000, "UNIX_MILLISECONDS"),
    (-62167219200001, "UNIX_MILLISECONDS"),
    ("x", "AUTO"),
    (None, "AUTO"),
    (False, "AUTO"),
]


@pytest.mark.parametrize(("value", "fmt"), INVALID)
def test_invalid_timestamp_falls_back_to_ingest_time(value: Any, fmt: str) -> None:
    """Decision 1 default: an unparsable timestamp uses the ingest time, counted as fallback."""
    dt, stats = land(value, fmt)
    assert (stats.accepted, stats.timestamp_fallback, stats.dropped) == (1, 1, {})
    assert dt == FALLBACK


VALID_B30 = {
    "ISO_8601": "2024-05-14T09:21:30Z",
    "UNIX_SECONDS": 1715678490,
    "UNIX_MILLISECONDS": "1715678490000",
    "AUTO": 1715678490123,
}


@pytest.mark.parametrize(("value", "fmt"), INVALID)
def test_invalid_timestamp_dropped_when_configured(value: Any, fmt: str) -> None:
    """Decision 1, onInvalid DROP: the event is not aggregated and counted as
    timestamp_invalid."""
    engine = make_engine(
        ingest_def(path="@.t", fmt=fmt, on_invalid="DROP"), [filter_def(interval=SECONDS_30)]
    )
    stats = engine.ingest(dumps([{"t": value}, {"t": VALID_B30[fmt]}]))
    assert (stats.events, stats.accepted, stats.timestamp_fallback) == (2, 1, 0)
    assert stats.dropped == {"timestamp_invalid": 1}
    assert stats.per_filter["f"]["matched"] == 1
    assert bucket_starts(engine) == [B30]


@pytest.mark.parametrize("on_invalid", ["INGEST_TIME", "DROP", None])
def test_missing_timestamp_member(on_invalid: str | None) -> None:
    """A missing timestamp member follows the onInvalid policy (default INGEST_TIME)."""
    engine = make_engine(
        ingest_def(path="@.receivedAt", on_invalid=on_invalid), [filter_def(interval=SECONDS_30)]
    )
    stats = engine.ingest(b'[{"a":1},{"receivedAt":"2024-05-14T09:21:30Z"},{"receivedAt":null}]')
    assert stats.events == 3
    if on_invalid == "DROP":
        assert (stats.accepted, stats.dropped, stats.timestamp_fallback) == (
            1,
            {"timestamp_invalid": 2},
            0,
        )
        assert [r["value"] for r in rows(engine)] == [1.0]
    else:
        assert (stats.accepted, stats.dropped, stats.timestamp_fallback) == (3, {}, 2)
        assert {r["dt"]: r["value"] for r in rows(engine)} == {B30: 1.0, FALLBACK: 2.0}


def test_drop_and_not_object_are_counted_separately() -> None:
    """not_object and timestamp_invalid are distinct reasons in one batch's stats."""
    engine = make_engine(ingest_def(path="@.t", on_invalid="DROP"), [filter_def()])
    stats = engine.ingest(b'[null,{"t":"bad"},3,{"t":"2024-05-14T09:21:30Z"}]')
    assert stats.to_dict()["dropped"] == {"not_object": 2, "timestamp_invalid": 1}
    assert (stats.events, stats.accepted) == (4, 1)


# --------------------------------------------------------------------------------------------
# Ingest time and the clock
# --------------------------------------------------------------------------------------------


def test_ingest_source_uses_the_clock() -> None:
    """``source: INGEST`` dates every event with the engine clock, ignoring event members."""
    now = [1715678489.5]
    engine = make_engine(
        {"id": "i", "name": "n", "schema": "ARRAY_OF_EVENTS", "timestamp": {"source": "INGEST"}},
        [filter_def(interval=SECONDS_30)],
        clock=lambda: now[0],
    )
    engine.ingest(b'[{"timestamp":"2001-01-01T00:00:00Z"}]')
    now[0] = 1715678490.0
    engine.ingest(b"[{},{}]")
    assert {r["dt"]: r["value"] for r in rows(engine)} == {B0: 1.0, B30: 2.0}


def test_omitted_timestamp_means_ingest_time() -> None:
    """An ingest without ``timestamp`` uses the ingest time."""
    engine = make_engine(
        {"id": "i", "name": "n", "schema": "ARRAY_OF_EVENTS"}, [filter_def(interval=SECONDS_30)]
    )
    stats = engine.ingest(b'[{"receivedAt":"2001-01-01T00:00:00Z"}]')
    assert stats.timestamp_fallback == 0
    assert bucket_starts(engine) == [FIXED_NOW_DT]


def test_received_at_overrides_the_clock() -> None:
    """``received_at`` (WAL replay) replaces the clock for ingest-time events and fallbacks."""
    engine = make_engine(ingest_def(path="@.t"), [filter_def(interval=SECONDS_30)])
    engine.ingest(b'[{"t":"nope"}]', received_at=1715678489.0)
    prepared = engine.prepare(b'[{"t":"nope"}]', received_at=1715678495.0)
    engine.apply(prepared)
    assert {r["dt"]: r["value"] for r in rows(engine)} == {B0: 1.0, B30: 1.0}


def test_received_ms_is_the_ingest_time_exactly() -> None:
    """``received_ms`` (the WAL's integer ms) is the ingest time as given, with no float trip:
    the last millisecond of a bucket stays in it; it excludes ``received_at``."""
    engine = make_engine(ingest_def(path="@.t"), [filter_def(interval=SECONDS_30)])
    engine.ingest(b'[{"t":"nope"}]', received_ms=1715678489_999)
    engine.apply(engine.prepare(b'[{"t":"nope"}]', received_ms=1715678490_000))
    assert {r["dt"]: r["value"] for r in rows(engine)} == {B0: 1.0, B30: 1.0}
    with pytest.raises(TypeError, match="not both"):
        engine.ingest(b"[]", received_at=1.0, received_ms=1000)
    with pytest.raises(TypeError, match="int"):
        engine.ingest(b"[]", received_ms=1.5)  # type: ignore[arg-type]


def test_default_clock_is_wall_time() -> None:
    """Without a clock the ingest time is the current wall time."""
    import time

    engine = eventtally.Engine(ingest_def(), [filter_def(interval=("DAY", 1))])
    before = time.time()
    engine.ingest(b"[{}]")
    after = time.time()
    (dt,) = bucket_starts(engine)
    day = 86400
    assert dt in {
        time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(before // day * day)),
        time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(after // day * day)),
    }


def test_flattened_elements_use_the_root_timestamp() -> None:
    """Decision 7: with flattening, the timestamp comes from the root event for every element."""
    engine = make_engine(
        ingest_def(path="@.t"),
        [filter_def(interval=SECONDS_30, flatten="@.items", groupings=["@.k"])],
    )
    event = {
        "t": "2024-05-14T09:21:30Z",
        "items": [
            {"k": "a", "t": "2001-01-01T00:00:00Z"},
            {"k": "b"},
            {"k": "c", "t": "garbage"},
        ],
    }
    stats = engine.ingest(dumps([event]))
    assert stats.timestamp_fallback == 0
    assert {(r["dt"], r["groupings"]["@.k"]) for r in rows(engine)} == {
        (B30, "a"),
        (B30, "b"),
        (B30, "c"),
    }


def test_flattened_elements_share_the_fallback_time() -> None:
    """A root event with no timestamp puts every element at ingest time, counted once."""
    engine = make_engine(
        ingest_def(path="@.t"), [filter_def(interval=SECONDS_30, flatten="@.items")]
    )
    stats = engine.ingest(dumps([{"items": [{"t": "2024-05-14T09:21:30Z"}, {}]}]))
    assert stats.timestamp_fallback == 1
    assert {r["dt"]: r["value"] for r in rows(engine)} == {FALLBACK: 2.0}


@pytest.mark.parametrize(
    ("raw", "fmt"),
    [
        (b'"2024-05-14T09:21:30\\u005a"', "ISO_8601"),
        (b'"\\u0032024-05-14T09:21:30Z"', "AUTO"),
        (b'"\\u0031715678490"', "UNIX_SECONDS"),
    ],
)
def test_escaped_timestamp_strings(raw: bytes, fmt: str) -> None:
    """Timestamp strings are unescaped before they are parsed."""
    engine = make_engine(ingest_def(path="@.t", fmt=fmt), [filter_def(interval=SECONDS_30)])
    stats = engine.ingest(b'[{"t":' + raw + b"}]")
    assert stats.timestamp_fallback == 0
    assert bucket_starts(engine) == [B30]


def test_timestamp_path_with_brackets_and_nesting() -> None:
    """The timestamp path is a full JPath (brackets, nesting, indices)."""
    engine = make_engine(
        ingest_def(path="@['meta data'].times[1]"), [filter_def(interval=SECONDS_30)]
    )
    stats = engine.ingest(dumps([{"meta data": {"times": ["x", "2024-05-14T09:21:30Z"]}}]))
    assert stats.timestamp_fallback == 0
    assert bucket_starts(engine) == [B30]


# --------------------------------------------------------------------------------------------
# Buckets (semantics.md §4)
# --------------------------------------------------------------------------------------------

TRUNCATION_TABLE = [
    # spec §5.4's worked examples: 5-minute and 13-minute (L = 780 s) buckets
    ("2024-01-01T00:07:30Z", ("MINUTE", 5), "2024-01-01T00:05:00Z"),
    ("2024-01-01T00:00:00Z", ("MINUTE", 5), "2024-01-01T00:00:00Z"),
    ("2024-01-01T00:13:05Z", ("MINUTE", 5), "2024-01-01T00:10:00Z"),
    ("2024-01-01T00:07:30Z", ("MINUTE", 13), "2024-01-01T00:06:00Z"),
    ("2024-01-01T00:00:00Z", ("MINUTE", 13), "2023-12-31T23:53:00Z"),
    ("2024-01-01T00:13:05Z", ("MINUTE", 13), "2024-01-01T00:06:00Z"),
]


@pytest.mark.parametrize(("time", "interval", "bucket"), TRUNCATION_TABLE)
def test_spec_truncation_table(time: str, interval: tuple[str, int], bucket: str) -> None:
    """Spec §5.4: buckets are whole intervals counted from the Unix epoch."""
    assert land(time, "ISO_8601", interval)[0] == bucket


BUCKETS = [
    # fixed intervals: floor(t / L) * L from the epoch
    ("2024-05-14T09:21:44.123Z", ("SECOND", 30), "2024-05-14T09:21:30Z"),
    ("2024-05-14T09:21:44.123Z", ("SECOND", 45), "2024-05-14T09:21:00Z"),
    ("2024-05-14T09:21:44.123Z", ("MINUTE", 1), "2024-05-14T09:21:00Z"),
    ("2024-05-14T09:21:44.123Z", ("MINUTE", 15), "2024-05-14T09:15:00Z"),
    ("2024-05-14T09:21:44.123Z", ("HOUR", 1), "2024-05-14T09:00:00Z"),
    ("2024-05-14T09:21:44.123Z", ("HOUR", 7), "2024-05-14T06:00:00Z"),
    ("2024-05-14T09:21:44.123Z", ("DAY", 1), "2024-05-14T00:00:00Z"),
    ("2024-05-14T09:21:44.123Z", ("DAY", 3), "2024-05-14T00:00:00Z"),
    # weeks start on Thursday 00:00 UTC (1970-01-01 was a Thursday)
    ("2024-05-14T09:21:44Z", ("WEEK", 1), "2024-05-09T00:00:00Z"),
    ("2024-05-15T23:59:59.999Z", ("WEEK", 1), "2024-05-09T00:00:00Z"),
    ("2024-05-16T00:00:00Z", ("WEEK", 1), "2024-05-16T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("WEEK", 2), "2024-05-09T00:00:00Z"),
    ("1970-01-01T00:00:00Z", ("WEEK", 1), "1970-01-01T00:00:00Z"),
    ("1970-01-07T23:59:59Z", ("WEEK", 1), "1970-01-01T00:00:00Z"),
    # pre-1970: floor, not truncation toward zero
    ("1969-12-31T23:59:59.999Z", ("MINUTE", 1), "1969-12-31T23:59:00Z"),
    ("1969-12-31T23:59:59Z", ("DAY", 1), "1969-12-31T00:00:00Z"),
    ("1969-12-31T23:59:59Z", ("WEEK", 1), "1969-12-25T00:00:00Z"),
    ("1969-12-31T23:59:59Z", ("SECOND", 45), "1969-12-31T23:59:15Z"),
    ("1969-07-20T20:17:40Z", ("HOUR", 5), "1969-07-20T20:00:00Z"),
    ("1969-07-20T19:59:59Z", ("HOUR", 5), "1969-07-20T15:00:00Z"),
    # MONTH / YEAR: calendar months counted from January 1970, UTC
    ("2024-05-14T09:21:44Z", ("MONTH", 1), "2024-05-01T00:00:00Z"),
    ("2024-05-31T23:59:59.999Z", ("MONTH", 1), "2024-05-01T00:00:00Z"),
    ("2024-02-29T12:00:00Z", ("MONTH", 1), "2024-02-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("MONTH", 3), "2024-04-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("MONTH", 5), "2024-03-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("MONTH", 7), "2024-04-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("MONTH", 12), "2024-01-01T00:00:00Z"),
    ("1970-01-01T00:00:00Z", ("MONTH", 5), "1970-01-01T00:00:00Z"),
    ("1969-12-31T23:59:59Z", ("MONTH", 1), "1969-12-01T00:00:00Z"),
    ("1969-05-31T23:59:59Z", ("MONTH", 5), "1969-03-01T00:00:00Z"),
    ("1969-05-31T23:59:59Z", ("MONTH", 12), "1969-01-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("YEAR", 1), "2024-01-01T00:00:00Z"),
    ("2024-12-31T23:59:59.999Z", ("YEAR", 1), "2024-01-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("YEAR", 3), "2024-01-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("YEAR", 10), "2020-01-01T00:00:00Z"),
    ("1969-05-14T09:21:44Z", ("YEAR", 3), "1967-01-01T00:00:00Z"),
    ("1900-02-28T00:00:00Z", ("YEAR", 100), "1870-01-01T00:00:00Z"),
    ("2024-05-14T09:21:44Z", ("YEAR", 100), "1970-01-01T00:00:00Z"),
]


@pytest.mark.parametrize(("time", "interval", "bucket"), BUCKETS)
def test_bucket_start(time: str, interval: tuple[str, int], bucket: str) -> None:
    """Bucket starts: epoch-aligned fixed intervals (Thursday weeks, pre-1970 floors) and
    calendar months and years in UTC."""
    assert land(time, "ISO_8601", interval)[0] == bucket


def test_output_timestamps_print_milliseconds_only_when_needed() -> None:
    """``dt`` is RFC 3339 UTC with ``Z``; whole seconds print no fraction."""
    engine = make_engine(ingest_def(path="@.t"), [filter_def(interval=("MINUTE", 1))])
    engine.ingest(b'[{"t":"2024-05-14T09:21:44.123+02:00"}]')
    assert bucket_starts(engine) == ["2024-05-14T07:21:00Z"]


def test_late_events_update_older_buckets() -> None:
    """Events arriving out of order update their own (older) buckets."""
    engine = make_engine(
        ingest_def(path="@.t"),
        [filter_def(interval=("MINUTE", 1), aggregations=[agg_def(1, ("COUNT", "SUM"), "@.v")])],
    )
    engine.ingest(b'[{"t":"2024-05-14T09:22:00Z","v":1}]')
    engine.ingest(b'[{"t":"2024-05-14T09:21:00Z","v":2},{"t":"2024-05-14T09:22:59Z","v":3}]')
    assert {r["dt"]: r["value"] for r in rows(engine, "SUM")} == {
        "2024-05-14T09:21:00Z": 2.0,
        "2024-05-14T09:22:00Z": 4.0,
    }


def test_rows_are_sorted_by_bucket() -> None:
    """Result rows come sorted by bucket start, pre-1970 first."""
    engine = make_engine(ingest_def(path="@.t", fmt="UNIX_SECONDS"), [filter_def()])
    engine.ingest(b'[{"t":1715678490},{"t":-90},{"t":0},{"t":1000000000}]')
    assert bucket_starts(engine) == [
        "1969-12-31T23:58:00Z",
        "1970-01-01T00:00:00Z",
        "2001-09-09T01:46:00Z",
        "2024-05-14T09:21:00Z",
    ]
