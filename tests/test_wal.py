"""Write-ahead log: framing, checksums, rotation, group commit, torn tails, corruption, crashes.

Real files under ``tmp_path``, real threads, and a child process killed with SIGKILL while it
appends. The on-disk layout checked here is the one ``docs/durability.md`` documents.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest

from eventtally.durability import wal as walmod
from eventtally.durability.wal import (
    TornTail,
    WalClosedError,
    WalCorruptionError,
    WalFailedError,
    WalRecord,
    WriteAheadLog,
    to_ms,
)

SEG_HEADER = 24  # magic(8) version(4) reserved(4) first_seq(8)
FRAME = 12  # magic(4) length(4) crc(4)
FIELDS = 22  # seq(8) received_at_ms(8) fmt(1) flags(1) org_len(2) ingest_len(2)


def rec(i: int, size: int = 100, org: str = "org1", ingest: str | None = "in1") -> WalRecord:
    """A record whose payload is determined by ``i`` (so replays can be checked byte for byte)."""
    return WalRecord(org, payload_for(i, size), ingest, 1_715_688_000_000 + i, flags=i % 256)


def payload_for(i: int, size: int) -> bytes:
    """Deterministic pseudo-random payload bytes for record ``i``."""
    return random.Random(i).randbytes(size)


def only_segment(d: Path) -> Path:
    """The single segment file of a log directory."""
    (seg,) = sorted(d.glob("wal-*.log"))
    return seg


def record_offsets(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every record in a segment's bytes, parsed by the documented layout."""
    out = []
    pos = SEG_HEADER
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos + 4)
        out.append((pos, pos + FRAME + length))
        pos += FRAME + length
    return out


# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


def test_roundtrip_every_field(tmp_path: Path) -> None:
    """Every field of a record comes back from replay exactly, after a reopen."""
    records = [
        WalRecord("org1", b'[{"a":1}]', "in1", 1_715_688_000_123, flags=7),
        WalRecord("ørg/ü", b"", None, -5, flags=255),
        WalRecord("", b"x" * 70_000, "", 0),
        WalRecord("org1", bytearray(b"\x00\xff" * 10), "in2", 2**62),  # type: ignore[arg-type]
    ]
    with WriteAheadLog(tmp_path) as wal:
        seqs = [wal.append(r) for r in records]
    assert seqs == [1, 2, 3, 4]
    with WriteAheadLog(tmp_path) as wal:
        got = list(wal.replay())
    assert [r.seq for r in got] == seqs
    for want, have in zip(records, got, strict=True):
        assert (have.org_id, have.ingest_id, have.received_at_ms, have.flags) == (
            want.org_id,
            want.ingest_id,
            want.received_at_ms,
            want.flags,
        )
        assert have.payload == bytes(want.payload)
        assert isinstance(have.payload, bytes)


def test_frame_layout_matches_the_documented_format(tmp_path: Path) -> None:
    """Segment header and record frame are laid out and checksummed as docs/durability.md says."""
    with WriteAheadLog(tmp_path) as wal:
        wal.append(WalRecord("o", b"PAYLOAD", "ing", 1234, flags=9))
    data = only_segment(tmp_path).read_bytes()
    assert only_segment(tmp_path).name == "wal-00000000000000000001.log"
    assert struct.unpack_from("<8sIIQ", data, 0) == (b"ETWALSEG", 1, 0, 1)
    magic, length, crc = struct.unpack_from("<4sII", data, SEG_HEADER)
    assert magic == b"ETWR"
    body = data[SEG_HEADER + FRAME :]
    assert length == len(body) == FIELDS + 1 + 3 + 7
    assert struct.unpack_from("<QqBBHH", body, 0) == (1, 1234, 0, 9, 1, 3)
    assert body[FIELDS:] == b"oingPAYLOAD"
    # CRC-32 of payload ‖ length ‖ fields ‖ names (payload first: it is summed outside the lock).
    want = zlib.crc32(body[FIELDS:][4:] + struct.pack("<I", length) + body[: FIELDS + 4])
    assert crc == want


@pytest.mark.parametrize("size", [0, 1, 5119, 5120, 310_000, (1 << 20) + 3])
def test_core_crc32_equals_zlib(size: int) -> None:
    """The core's crc32 (appends of ``bytes``) is zlib's: records stay readable both ways."""
    from eventtally import _core

    data = random.Random(size).randbytes(size)
    for seed in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        assert _core.crc32(data, seed) == zlib.crc32(data, seed)
    assert _core.crc32(bytearray(data)) == _core.crc32(memoryview(data)) == zlib.crc32(data)
    cut = size // 3
    assert _core.crc32(data[cut:], _core.crc32(data[:cut])) == zlib.crc32(data)
    with pytest.raises(TypeError):
        _core.crc32(12)  # type: ignore[arg-type]


def test_records_with_bytes_and_other_payloads_replay(tmp_path: Path) -> None:
    """A ``bytes`` payload (checksummed by the core) and a ``bytearray`` or ``memoryview`` one
    (by zlib) frame identically and replay."""
    payload = random.Random(7).randbytes(300_000)
    with WriteAheadLog(tmp_path / "a", fsync="never") as log:
        log.append(WalRecord("o", payload, "i", 1))
        log.append(WalRecord("o", bytearray(payload), "i", 1))
        log.append(WalRecord("o", memoryview(payload), "i", 1))
    with WriteAheadLog(tmp_path / "a", fsync="never") as log:
        got = [bytes(r.payload) for r in log.replay()]
    assert got == [payload] * 3
    assert only_segment(tmp_path / "a").read_bytes().count(payload) == 3


def test_none_and_empty_ingest_id_are_distinct(tmp_path: Path) -> None:
    """An ingest id of None is flagged, not confused with the empty string."""
    with WriteAheadLog(tmp_path) as wal:
        wal.append(WalRecord("o", b"1", None))
        wal.append(WalRecord("o", b"2", ""))
        assert [r.ingest_id for r in wal.replay()] == [None, ""]


def test_compressed_payload_roundtrips_and_is_smaller(tmp_path: Path) -> None:
    """compress_level stores zlib data on disk and replays the original bytes."""
    body = b'{"event":"Product Viewed","properties":{"x":1}}' * 2000
    with WriteAheadLog(tmp_path, compress_level=1) as wal:
        wal.append(WalRecord("o", body))
        assert [r.payload for r in wal.replay()] == [body]
    assert only_segment(tmp_path).stat().st_size < len(body) // 10


def test_invalid_records_are_refused(tmp_path: Path) -> None:
    """Malformed records raise ValueError/TypeError and consume nothing."""
    with WriteAheadLog(tmp_path) as wal:
        with pytest.raises(ValueError):
            wal.append(WalRecord("o", b"", flags=256))
        with pytest.raises(TypeError):
            wal.append(WalRecord("o", b"", received_at_ms=1.5))  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            wal.append(WalRecord("x" * 70_000, b""))
        with pytest.raises(TypeError):
            wal.append(WalRecord("o", "text"))  # type: ignore[arg-type]
        assert wal.append(WalRecord("o", b"ok")) == 1


def test_to_ms_rounds_like_the_engine() -> None:
    """to_ms(seconds) / 1000 round-trips through the engine's own rounding."""
    for s in (1715688000.0, 1715688000.1234, 1715688000.9995, 0.0005, -1.25):
        ms = to_ms(s)
        assert ms == round(s * 1000)
        assert round((ms / 1000) * 1000) == ms


def test_rejects_bad_options(tmp_path: Path) -> None:
    """Unknown fsync policies and absurd sizes are refused at construction."""
    with pytest.raises(ValueError):
        WriteAheadLog(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WriteAheadLog(tmp_path, segment_bytes=10)
    with pytest.raises(ValueError):
        WriteAheadLog(tmp_path, compress_level=12)


# --------------------------------------------------------------------------------------------
# Sequence numbers and rotation
# --------------------------------------------------------------------------------------------


def test_rotation_names_segments_by_first_seq(tmp_path: Path) -> None:
    """Segments rotate at segment_bytes and are named after their first sequence number."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        seqs = [wal.append(rec(i, 1500)) for i in range(1, 21)]
        segments = wal.segments()
    assert seqs == list(range(1, 21))
    assert len(segments) > 5
    for seg in segments:
        data = seg.path.read_bytes()
        assert seg.path.name == f"wal-{seg.first_seq:020d}.log"
        assert struct.unpack_from("<Q", data, 16)[0] == seg.first_seq
        offsets = record_offsets(data)
        if offsets:
            assert struct.unpack_from("<Q", data, offsets[0][0] + FRAME)[0] == seg.first_seq
    with WriteAheadLog(tmp_path) as wal:
        got = list(wal.replay())
    assert [r.seq for r in got] == seqs
    assert all(r.payload == payload_for(r.seq, 1500) for r in got)


def test_sequence_numbers_continue_across_restarts(tmp_path: Path) -> None:
    """Numbers keep increasing over reopenings and rotations; none is ever handed out twice."""
    seen: list[int] = []
    for _round in range(4):
        with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
            seen += [wal.append(rec(len(seen) + 1, 900)) for _ in range(7)]
    assert seen == list(range(1, 29))
    with WriteAheadLog(tmp_path) as wal:
        assert [r.seq for r in wal.replay()] == seen
        assert wal.next_seq == 29


def test_empty_newest_segment_keeps_the_counter(tmp_path: Path) -> None:
    """Reopening right after a rotation (empty newest segment) neither reuses nor loses numbers."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        while len(wal.segments()) < 2:
            wal.append(rec(wal.next_seq, 1000))
        last = wal.last_seq
    assert wal.segments()[-1].size == SEG_HEADER
    with WriteAheadLog(tmp_path) as wal:
        assert wal.last_seq == last
        assert wal.append(rec(0)) == last + 1


def test_ensure_next_seq_only_moves_forward(tmp_path: Path) -> None:
    """ensure_next_seq raises the counter (recovery: past every snapshot) and never lowers it."""
    with WriteAheadLog(tmp_path) as wal:
        wal.append(rec(1))
        wal.ensure_next_seq(100)
        wal.ensure_next_seq(50)
        assert wal.append(rec(2)) == 100
    with WriteAheadLog(tmp_path) as wal:
        assert [r.seq for r in wal.replay()] == [1, 100]
        assert wal.append(rec(3)) == 101


def test_replay_after_seq_and_by_org(tmp_path: Path) -> None:
    """replay(after_seq) starts after the number; org_id and where() select from headers."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        for i in range(1, 31):
            wal.append(rec(i, 700, org="a" if i % 3 else "b"))
        assert [r.seq for r in wal.replay(25)] == [26, 27, 28, 29, 30]
        assert [r.seq for r in wal.replay(30)] == []
        assert [r.seq for r in wal.replay(org_id="b")] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
        evens = list(wal.replay(10, where=lambda seq, org: seq % 2 == 0))
        assert [r.seq for r in evens] == [12, 14, 16, 18, 20, 22, 24, 26, 28, 30]


def test_replay_does_not_read_records_it_leaves_out(tmp_path: Path) -> None:
    """A damaged payload of a record left out by where() is not read, so it does not raise."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        for i in range(1, 7):
            wal.append(rec(i, 1500, org="b" if i == 2 else "a"))
        older = wal.segments()[0].path
    data = bytearray(older.read_bytes())
    _, end = record_offsets(bytes(data))[1]
    data[end - 10] ^= 0xFF  # inside org b's payload, in an older segment
    older.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path) as wal:
        assert [r.seq for r in wal.replay(org_id="a")] == [1, 3, 4, 5, 6]
        with pytest.raises(WalCorruptionError):
            list(wal.replay())


def test_replay_while_appending_sees_a_consistent_prefix(tmp_path: Path) -> None:
    """A replay running while other threads append yields whole, valid records, in order."""
    # The writer is bounded: unbounded, each replay reads a longer log than the last, and on a
    # loaded machine the replays fall ever further behind (quadratic work, a timeout).
    max_records = 1500
    with WriteAheadLog(tmp_path, fsync="never", segment_bytes=64 << 10) as wal:
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set() and i < max_records:
                i += 1
                wal.append(rec(i, 3000))

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(20):
                got = list(wal.replay())
                assert [r.seq for r in got] == list(range(1, len(got) + 1))
                assert all(r.payload == payload_for(r.seq, 3000) for r in got)
        finally:
            stop.set()
            t.join()
        got = list(wal.replay())
        assert [r.seq for r in got] == list(range(1, len(got) + 1))
        assert 0 < len(got) <= max_records


# --------------------------------------------------------------------------------------------
# fsync policies and group commit
# --------------------------------------------------------------------------------------------


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """With fsync=always, 16 threads' appends are all durable on return with fewer fsyncs."""
    observed: list[float] = []
    wal = WriteAheadLog(tmp_path, fsync="always", on_fsync=observed.append)
    fsyncs_before = wal.stats().fsyncs
    not_durable: list[int] = []
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker(t: int) -> None:
        barrier.wait()
        for k in range(40):
            seq = wal.append(rec(t * 1000 + k, 2000))
            if wal.stats().synced_seq < seq:
                not_durable.append(seq)
            with lock:
                results.append(seq)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wal.close()  # its cut of the preallocated tail is one more fsync, observed too
    stats = wal.stats()
    assert not not_durable
    assert sorted(results) == list(range(1, 641))
    fsyncs = stats.fsyncs - fsyncs_before
    assert 0 < fsyncs < 640, fsyncs
    assert len(observed) == stats.fsyncs
    assert stats.fsync_buckets[-1] == (float("inf"), stats.fsyncs)
    assert stats.fsync_seconds == pytest.approx(sum(observed))
    with WriteAheadLog(tmp_path) as reopened:
        assert sorted(r.seq for r in reopened.replay()) == list(range(1, 641))


def test_group_commit_across_rotations(tmp_path: Path) -> None:
    """Eight threads appending with fsync=always through many rotations lose and repeat nothing."""
    wal = WriteAheadLog(tmp_path, fsync="always", segment_bytes=16 << 10)
    got: list[int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for k in range(30):
            seq = wal.append(rec(t * 100 + k, 3000))
            with lock:
                got.append(seq)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wal.segments()) > 30
    wal.close()
    assert sorted(got) == list(range(1, 241))
    with WriteAheadLog(tmp_path) as reopened:
        records = list(reopened.replay())
    assert [r.seq for r in records] == list(range(1, 241))
    base = 1_715_688_000_000
    assert all(r.payload == payload_for(r.received_at_ms - base, 3000) for r in records)


def test_group_commit_leader_covers_followers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends made while an fsync is in flight all return after the next single fsync."""
    gate = threading.Event()
    entered = threading.Event()
    calls: list[int] = []
    real_sync = walmod._sync

    def slow_sync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            entered.set()
            gate.wait(5)
        real_sync(fd)

    with WriteAheadLog(tmp_path, fsync="always") as wal:
        monkeypatch.setattr(walmod, "_sync", slow_sync)
        first = threading.Thread(target=wal.append, args=(rec(1),))
        first.start()
        assert entered.wait(5)
        followers = [threading.Thread(target=wal.append, args=(rec(i),)) for i in range(2, 12)]
        for t in followers:
            t.start()
        deadline = time.monotonic() + 5
        while wal.stats().records < 11 and time.monotonic() < deadline:
            time.sleep(0.001)  # all ten followers have written and are waiting
        gate.set()
        first.join()
        for t in followers:
            t.join()
        assert len(calls) == 2  # the leader's fsync, then one for all ten followers
        monkeypatch.setattr(walmod, "_sync", real_sync)


def test_interval_policy_syncs_in_the_background(tmp_path: Path) -> None:
    """fsync=interval returns before syncing; the background thread syncs within the interval."""
    with WriteAheadLog(tmp_path, fsync="interval", interval_ms=20) as wal:
        base = wal.stats().fsyncs
        for i in range(50):
            wal.append(rec(i))
        assert wal.stats().fsyncs - base < 50
        deadline = time.monotonic() + 5
        while wal.stats().synced_seq < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wal.stats().synced_seq == 50
        assert wal.stats().fsyncs > base


def test_never_policy_leaves_it_to_the_os_until_close(tmp_path: Path) -> None:
    """fsync=never does not fsync on append or rotation; close() syncs once."""
    wal = WriteAheadLog(tmp_path, fsync="never", segment_bytes=4096)
    for i in range(30):
        wal.append(rec(i, 1000))
    assert wal.stats().fsyncs == 0
    wal.sync()
    assert wal.stats().fsyncs == 1
    wal.append(rec(99))
    wal.close()
    assert wal.stats().fsyncs == 2
    wal.close()  # idempotent


def test_closed_log_refuses_appends_with_oserror(tmp_path: Path) -> None:
    """append after close raises WalClosedError, an OSError (a retryable 503, not a 400)."""
    wal = WriteAheadLog(tmp_path)
    wal.close()
    with pytest.raises(WalClosedError) as info:
        wal.append(rec(1))
    assert isinstance(info.value, OSError)


def test_failed_fsync_poisons_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync error fails the append and every later one (pages may be lost: fsyncgate)."""
    wal = WriteAheadLog(tmp_path, fsync="always")
    wal.append(rec(1))

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(walmod, "_sync", broken)
    with pytest.raises(WalFailedError):
        wal.append(rec(2))
    monkeypatch.undo()
    with pytest.raises(WalFailedError) as info:
        wal.append(rec(3))
    assert isinstance(info.value, OSError)
    wal.close()
    with WriteAheadLog(tmp_path) as reopened:
        assert reopened.append(rec(4)) == 3  # seq 2 is on disk (written, fsync failed)


def test_failed_write_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half way (disk full) is cut off, so the segment stays well formed.
    (A plain segment, whose size is its records: test_wal_prealloc covers a reserved one.)"""
    wal = WriteAheadLog(tmp_path, fsync="never", preallocate=False)
    wal.append(rec(1))
    size = only_segment(tmp_path).stat().st_size
    real = walmod._write_record_at

    def half_then_enospc(fd: int, parts: list[bytes], offset: int) -> int:
        os.pwrite(fd, bytes(parts[0])[:7], offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(walmod, "_write_record_at", half_then_enospc)
    with pytest.raises(OSError):
        wal.append(rec(2))
    assert only_segment(tmp_path).stat().st_size == size
    monkeypatch.setattr(walmod, "_write_record_at", real)
    assert wal.append(rec(3)) == 3
    wal.close()
    with WriteAheadLog(tmp_path) as reopened:
        assert reopened.torn_tail is None
        assert [(r.seq, r.payload) for r in reopened.replay()] == [
            (1, payload_for(1, 100)),
            (3, payload_for(3, 100)),
        ]


def test_stats_count_bytes_and_records(tmp_path: Path) -> None:
    """bytes_written equals the growth of the segment files; records counts appends."""
    with WriteAheadLog(tmp_path, fsync="never") as wal:
        for i in range(10):
            wal.append(rec(i, 333))
        st = wal.stats()
        assert st.records == 10
        assert st.last_seq == 10
    # Closed, the (preallocated) segment holds its records only.
    assert st.bytes_written == only_segment(tmp_path).stat().st_size - SEG_HEADER


def test_fsync_hook_errors_do_not_break_appends(tmp_path: Path) -> None:
    """A failing on_fsync hook is logged, and appends still succeed."""

    def bad_hook(seconds: float) -> None:
        raise RuntimeError("metrics down")

    with WriteAheadLog(tmp_path, on_fsync=bad_hook) as wal:
        assert wal.append(rec(1)) == 1


# --------------------------------------------------------------------------------------------
# Torn tails and corruption
# --------------------------------------------------------------------------------------------


def test_torn_tail_at_every_byte_offset_of_the_last_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cutting the file anywhere inside the last record: open cuts it and keeps the rest intact."""
    src = tmp_path / "src"
    with WriteAheadLog(src) as wal:
        for i in range(1, 4):
            wal.append(rec(i, 200))
        wal.append(rec(4, 150, org="last-org", ingest="last-ingest"))
    full = only_segment(src).read_bytes()
    (_, good_end), (last_start, last_end) = record_offsets(full)[-2:]
    assert last_end == len(full) and good_end == last_start
    work = tmp_path / "work"
    caplog.set_level(logging.WARNING, logger="eventtally.wal")
    for cut in range(last_start, last_end):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / only_segment(src).name).write_bytes(full[:cut])
        caplog.clear()
        with WriteAheadLog(work, fsync="never") as wal:
            torn = wal.torn_tail
            got = list(wal.replay())
            next_seq = wal.next_seq
        assert [(r.seq, r.payload) for r in got] == [(i, payload_for(i, 200)) for i in (1, 2, 3)]
        assert only_segment(work).stat().st_size == good_end
        if cut == last_start:
            assert torn is None  # the file ends exactly at a record boundary
            assert next_seq == 4
            continue
        assert isinstance(torn, TornTail)
        assert (torn.offset, torn.bytes_cut) == (good_end, cut - good_end)
        assert any("torn tail" in r.getMessage() for r in caplog.records)
        # Once the torn record's number was written, it is never handed out again.
        assert next_seq == (5 if cut - last_start >= FRAME + 8 else 4)


def test_reopened_after_cut_appends_cleanly(tmp_path: Path) -> None:
    """After a torn tail is cut, new records append and a further reopen finds no damage."""
    with WriteAheadLog(tmp_path) as wal:
        for i in range(1, 4):
            wal.append(rec(i))
    seg = only_segment(tmp_path)
    os.truncate(seg, seg.stat().st_size - 3)
    with WriteAheadLog(tmp_path) as wal:
        assert wal.torn_tail is not None
        new = wal.append(rec(10))
    with WriteAheadLog(tmp_path) as wal:
        assert wal.torn_tail is None
        assert [r.seq for r in wal.replay()] == [1, 2, new]
        assert new == 4


def test_crc_mismatch_at_the_tail_is_a_torn_tail(tmp_path: Path) -> None:
    """A bit flip in the last record (nothing valid after it) is cut as a torn tail."""
    with WriteAheadLog(tmp_path) as wal:
        for i in range(1, 4):
            wal.append(rec(i))
    seg = only_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0x01
    seg.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path) as wal:
        assert wal.torn_tail is not None and wal.torn_tail.reason == "crc mismatch"
        assert [r.seq for r in wal.replay()] == [1, 2]


def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    """Zeros after the last record (a file extended but never written) are cut off."""
    with WriteAheadLog(tmp_path) as wal:
        wal.append(rec(1))
    seg = only_segment(tmp_path)
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\0" * 5000)
    with WriteAheadLog(tmp_path) as wal:
        assert wal.torn_tail is not None and wal.torn_tail.bytes_cut == 5000
        assert seg.stat().st_size == size
        assert [r.seq for r in wal.replay()] == [1]


def test_incomplete_segment_header_is_rewritten(tmp_path: Path) -> None:
    """A newest segment cut inside its header (crash during rotation) is recreated empty."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        while len(wal.segments()) < 3:
            wal.append(rec(wal.next_seq, 1500))
        newest = wal.segments()[-1]
        last = wal.last_seq
    os.truncate(newest.path, 10)
    with WriteAheadLog(tmp_path) as wal:
        assert wal.torn_tail is not None and wal.torn_tail.reason == "incomplete segment header"
        assert newest.path.stat().st_size == SEG_HEADER
        assert wal.append(rec(0)) == last + 1


def test_damage_followed_by_valid_records_is_not_a_torn_tail(tmp_path: Path) -> None:
    """A bad record with valid ones after it in the newest segment refuses to open."""
    with WriteAheadLog(tmp_path) as wal:
        for i in range(1, 5):
            wal.append(rec(i))
    seg = only_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    start, end = record_offsets(bytes(data))[1]
    data[end - 1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruptionError) as info:
        WriteAheadLog(tmp_path)
    assert info.value.offset == start
    assert info.value.reason == "crc mismatch"
    assert seg.read_bytes() == bytes(data)  # nothing was cut
    with WriteAheadLog(tmp_path, repair=True) as wal:
        assert wal.torn_tail is not None and wal.torn_tail.records_discarded == 2
        assert [r.seq for r in wal.replay()] == [1]


def test_corruption_in_an_older_segment_raises_on_replay(tmp_path: Path) -> None:
    """A damaged record in a non-last segment stops replay with a clear error, not a skip."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        for i in range(1, 16):
            wal.append(rec(i, 1500))
        first_seg = wal.segments()[0].path
    data = bytearray(first_seg.read_bytes())
    start, _ = record_offsets(bytes(data))[1]
    data[start + FRAME + 30] ^= 0x10
    first_seg.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path) as wal:  # only the newest segment is scanned on open
        got: list[int] = []
        with pytest.raises(WalCorruptionError) as info:
            got.extend(r.seq for r in wal.replay())
    assert got == [1]
    assert info.value.path == str(first_seg)
    assert info.value.offset == start
    assert "damaged record" in str(info.value)


def test_truncated_older_segment_raises_on_replay(tmp_path: Path) -> None:
    """An older segment cut short is corruption (only the newest may have a torn tail)."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        for i in range(1, 16):
            wal.append(rec(i, 1500))
        first_seg = wal.segments()[0].path
    os.truncate(first_seg, first_seg.stat().st_size - 100)
    with WriteAheadLog(tmp_path) as wal, pytest.raises(WalCorruptionError):
        list(wal.replay())


def test_bad_segment_header_raises(tmp_path: Path) -> None:
    """A segment whose header is not ours is refused (newest: on open; older: on replay)."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        for i in range(1, 10):
            wal.append(rec(i, 1500))
        segments = wal.segments()
    older, newest = segments[0].path, segments[-1].path
    data = bytearray(older.read_bytes())
    data[0:8] = b"NOTAWAL!"
    older.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path) as wal, pytest.raises(WalCorruptionError):
        list(wal.replay())
    data = bytearray(newest.read_bytes())
    data[8] = 9  # unknown version
    newest.write_bytes(bytes(data))
    with pytest.raises(WalCorruptionError):
        WriteAheadLog(tmp_path)


# --------------------------------------------------------------------------------------------
# Truncation and retention
# --------------------------------------------------------------------------------------------


def _filled(tmp_path: Path, **kwargs: object) -> WriteAheadLog:
    wal = WriteAheadLog(tmp_path, segment_bytes=4096, **kwargs)  # type: ignore[arg-type]
    for i in range(1, 31):
        wal.append(rec(i, 1500))
    return wal


def test_truncate_before_deletes_only_covered_whole_segments(tmp_path: Path) -> None:
    """Segments whose every record is below the number go, oldest first; the active one stays."""
    with _filled(tmp_path) as wal:
        segs = wal.segments()
        assert wal.truncate_before(segs[1].first_seq) == [segs[0].path]  # exactly covered
        assert wal.truncate_before(segs[2].first_seq - 1) == []  # segment 1 not fully covered
        assert wal.first_seq == segs[1].first_seq
        deleted = wal.truncate_before(10**9)
        assert [s.path for s in wal.segments()] == [segs[-1].path]
        assert len(deleted) == len(segs) - 2
        assert [r.seq for r in wal.replay()] == list(range(segs[-1].first_seq, 31))
    with WriteAheadLog(tmp_path) as wal:
        assert wal.first_seq == segs[-1].first_seq
        assert wal.append(rec(31)) == 31


def test_truncate_before_keeps_retained_bytes(tmp_path: Path) -> None:
    """retain_bytes keeps the newest segments totalling at least that many bytes."""
    with _filled(tmp_path, retain_bytes=10_000) as wal:
        wal.truncate_before(10**9)
        kept = wal.segments()
        older = sum(s.size for s in kept[1:])
        assert older < 10_000 <= older + kept[0].size


def test_truncate_before_keeps_recent_segments(tmp_path: Path) -> None:
    """retain_seconds keeps segments modified within that many seconds (for backfill)."""
    with _filled(tmp_path, retain_seconds=3600) as wal:
        segs = wal.segments()
        old = time.time() - 7200
        for s in segs[:3]:
            os.utime(s.path, (old, old))
        assert wal.truncate_before(10**9) == [s.path for s in segs[:3]]


# --------------------------------------------------------------------------------------------
# A real crash: SIGKILL while appending
# --------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import random, sys
    from eventtally.durability.wal import WalRecord, WriteAheadLog

    directory, policy, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wal = WriteAheadLog(directory, fsync=policy, segment_bytes=3 << 20)
    k = start
    while True:
        size = random.Random(k).randrange(1, 1 << 18)
        payload = b"%d|" % k + random.Random(k).randbytes(size)
        seq = wal.append(WalRecord("org", payload, "ing", k))
        print(seq, k, flush=True)
        k += 1
    """
)


def _expected_payload(k: int) -> bytes:
    size = random.Random(k).randrange(1, 1 << 18)
    return b"%d|" % k + random.Random(k).randbytes(size)


@pytest.mark.slow
def test_sigkill_mid_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A child appending records of up to 256 KB is SIGKILLed at random moments, five times;
    after each, every record whose append returned is present and intact, the tail cut cleanly."""
    rng = random.Random(5)
    acknowledged: dict[int, int] = {}
    k = 0
    all_seqs: list[int] = []
    for round_no, policy in enumerate(("always", "never", "interval", "always", "never")):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), policy, str(k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # wait until it is really appending
        assert first, f"child died in round {round_no}"
        time.sleep(rng.uniform(0.02, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        lines = (first + rest).splitlines(keepends=True)
        for line in lines:
            if line.endswith("\n"):  # a half-printed last line was not acknowledged yet
                seq, kk = map(int, line.split())
                acknowledged[seq] = kk
        with WriteAheadLog(tmp_path) as wal:
            records = list(wal.replay())
            paths = [seg.path for seg in wal.segments()]
        for path in paths:  # cut cleanly: every closed segment ends at a record boundary
            data = path.read_bytes()
            ends = [e for _, e in record_offsets(data)]
            assert (ends[-1] if ends else SEG_HEADER) == len(data)
        by_seq = {r.seq: r for r in records}
        for seq, kk in acknowledged.items():
            assert seq in by_seq, f"acknowledged record {seq} lost in round {round_no}"
            assert by_seq[seq].payload == _expected_payload(kk)
            assert by_seq[seq].received_at_ms == kk
        for r in records:  # unacknowledged survivors are intact too
            assert r.payload == _expected_payload(r.received_at_ms)
        seqs = [r.seq for r in records]
        assert seqs == sorted(set(seqs))
        assert seqs[: len(all_seqs)] == all_seqs  # nothing earlier changed
        all_seqs = seqs
        k = max(r.received_at_ms for r in records) + 1
    assert len(acknowledged) >= 5


def test_short_positional_writes_continue_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record write that the kernel cuts short (a regular file may) goes on at the first byte
    not written, at the right file offset, so the log replays byte for byte."""
    from eventtally.durability import files

    real = os.pwritev
    calls: list[int] = []

    def at_most_5000(fd: int, parts: list[bytes], offset: int) -> int:
        calls.append(offset)
        data = b"".join(bytes(p) for p in parts)[:5000]
        return real(fd, [data], offset)

    monkeypatch.setattr(files.os, "pwritev", at_most_5000)
    wal = WriteAheadLog(tmp_path, fsync="never")
    for i in range(3):
        wal.append(rec(i, size=12_000))
    monkeypatch.setattr(files.os, "pwritev", real)
    wal.close()
    assert len(calls) >= 9  # every record took several writes
    with WriteAheadLog(tmp_path) as reopened:
        assert reopened.torn_tail is None
        assert [r.payload for r in reopened.replay()] == [payload_for(i, 12_000) for i in range(3)]


def test_an_append_is_one_positional_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame, payload and end marker go out in one ``pwritev`` at the log's offset: no
    ``writev`` and no ``lseek`` per record (each one is a syscall and a release of the
    interpreter lock on the server's hot path)."""
    wal = WriteAheadLog(tmp_path, fsync="never")  # preallocated: every append writes a marker
    wal.append(rec(0))
    seen: list[str] = []
    for name in ("writev", "lseek", "write"):
        real = getattr(os, name)

        def spy(*args: object, _real: object = real, _name: str = name) -> object:
            seen.append(_name)
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(walmod.os, name, spy)
    for i in range(1, 4):
        wal.append(rec(i))
    monkeypatch.undo()
    assert seen == []
    wal.close()
    with WriteAheadLog(tmp_path) as reopened:
        assert [r.payload for r in reopened.replay()] == [payload_for(i, 100) for i in range(4)]
