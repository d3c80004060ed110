"""Write-ahead log: recycled segments (spares overwritten in place), end markers, stale records.

Real files under ``tmp_path``; the crash test SIGKILLs a child appending into recycled
segments. The layout checked here (``spare-<first seq>.wal``, the ``ETWE`` end marker) is the
one ``docs/durability.md`` documents.
"""

from __future__ import annotations

import random
import struct
import sys
import textwrap
from pathlib import Path

import pytest

from eventtally.durability.wal import WalRecord, WriteAheadLog
from eventtally.server.config import ConfigFileError, DurabilityConfig
from tests.support import sigkill_child_when

SEG_HEADER = 24
FRAME = 12
END = 12  # b"ETWE" + the segment's first seq (u64)


def rec(i: int, size: int = 900) -> WalRecord:
    return WalRecord("org1", random.Random(i).randbytes(size), "in1", 1_715_688_000_000 + i)


def record_ends(data: bytes, stop: int | None = None) -> list[int]:
    """End offsets of the records from the segment header on, parsed by the documented layout,
    up to ``stop`` (default: the whole file)."""
    stop = len(data) if stop is None else stop
    out, pos = [], SEG_HEADER
    while pos < stop:
        (length,) = struct.unpack_from("<I", data, pos + 4)
        pos += FRAME + length
        out.append(pos)
    return out


def fill(wal: WriteAheadLog, start: int, n: int) -> list[int]:
    return [wal.append(rec(i)) for i in range(start, start + n)]


def make_spares(tmp_path: Path, recycle: int = 2) -> WriteAheadLog:
    """A log with segments of 4 KiB, 20 records of 900 bytes (several segments), all but the
    active one removed: the newest ``recycle`` of them are spares."""
    wal = WriteAheadLog(tmp_path, fsync="always", segment_bytes=4096, recycle_segments=recycle)
    fill(wal, 0, 20)
    assert len(wal.segments()) >= 4
    removed = wal.truncate_before(10**9)
    assert len(wal.segments()) == 1  # every inactive segment went
    assert all(not p.exists() for p in removed)
    assert len(wal.spares()) == recycle
    return wal


def test_rotation_overwrites_the_newest_spare_in_place(tmp_path: Path) -> None:
    """A rotation renames the newest spare into the next segment (same inode, no new file); the
    records replay exactly, before and after a reopen, which finds a clean end (no torn tail)."""
    wal = make_spares(tmp_path)
    spares = wal.spares()
    inode = spares[-1].stat().st_ino
    last_before = wal.last_seq
    seqs = fill(wal, 100, 12)
    segs = wal.segments()
    reused = [s for s in segs if s.path.stat().st_ino == inode]
    assert len(reused) == 1 and reused[0].first_seq > last_before
    assert wal.spares() == spares[:1] or wal.spares() == []
    got = [(r.seq, r.payload) for r in wal.replay(last_before)]
    assert got == [(s, rec(100 + i).payload) for i, s in enumerate(seqs)]
    wal.close()
    with WriteAheadLog(tmp_path, segment_bytes=4096, recycle_segments=2) as again:
        assert again.torn_tail is None
        assert [(r.seq, r.payload) for r in again.replay(last_before)] == got
        more = fill(again, 200, 3)
        assert [r.seq for r in again.replay(last_before)] == seqs + more


def test_stale_records_of_a_recycled_file_never_replay(tmp_path: Path) -> None:
    """A recycled file still holds its old, valid records behind the new ones: replay, a reopen
    and a reopen with ``repair`` see only the new ones, and the end marker follows them."""
    wal = make_spares(tmp_path, recycle=1)
    (spare,) = wal.spares()
    old = spare.read_bytes()
    assert len(record_ends(old)) >= 3  # several valid old records to go stale
    while wal.spares():  # rotate into the spare, then write one record there
        last = wal.append(rec(300))
    active = wal.segments()[-1]
    first_new = wal.append(rec(301))
    wal.close()
    data = active.path.read_bytes()
    assert len(data) >= len(old)  # overwritten in place, not cut
    live_end = record_ends(data, SEG_HEADER + 1)[0]  # the one new record
    assert data[live_end : live_end + END] == b"ETWE" + struct.pack("<Q", active.first_seq)
    assert b"ETWR" in data[live_end + END :]  # stale records are still there
    for repair in (False, True):
        with WriteAheadLog(tmp_path, segment_bytes=4096, recycle_segments=1, repair=repair) as w:
            assert w.torn_tail is None
            assert [r.seq for r in w.replay(last)] == [first_new]
            assert w.segments()[-1].size == live_end
            assert w.next_seq == first_new + 1


def test_a_torn_write_over_stale_bytes_is_cut(tmp_path: Path) -> None:
    """A record half-written over a recycled file's marker (a crash mid-append) is a torn tail:
    cut at the last good record, the file truncated there, and appends continue."""
    wal = make_spares(tmp_path, recycle=1)
    while wal.spares():
        wal.append(rec(400))
    active = wal.segments()[-1]
    keep = fill(wal, 401, 2)
    end = wal.segments()[-1].size
    wal.close()
    data = bytearray(active.path.read_bytes())
    head = data[SEG_HEADER : SEG_HEADER + FRAME + 20]  # a real record's frame, then garbage
    data[end : end + len(head)] = head
    active.path.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path, segment_bytes=4096, recycle_segments=1) as w:
        assert w.torn_tail is not None and w.torn_tail.offset == end
        assert active.path.stat().st_size == end
        assert [r.seq for r in w.replay(keep[0] - 1)] == keep
        nxt = w.append(rec(500))
        assert [r.seq for r in w.replay(keep[0] - 1)] == [*keep, nxt]


def test_a_rotated_recycled_segment_is_cut_to_its_records(tmp_path: Path) -> None:
    """Once a recycled segment rotates, its file ends at its last record, without marker or stale
    bytes: older segments read exactly as the format always had them."""
    wal = make_spares(tmp_path, recycle=2)
    inodes = {p.stat().st_ino for p in wal.spares()}
    fill(wal, 600, 30)
    recycled = [s for s in wal.segments()[:-1] if s.path.stat().st_ino in inodes]
    assert recycled
    for seg in recycled:
        data = seg.path.read_bytes()
        assert record_ends(data)[-1] == len(data) == seg.size
    wal.close()


def test_segments_written_before_recycling_still_replay(tmp_path: Path) -> None:
    """A log written without recycling (the previous format, byte for byte) replays and continues
    under a recycling log, and a log written with recycling replays with it turned off."""
    with WriteAheadLog(tmp_path, segment_bytes=4096) as old:
        seqs = fill(old, 0, 10)
    for seg in sorted(tmp_path.glob("wal-*.log")):
        data = seg.read_bytes()
        ends = record_ends(data)
        assert (ends[-1] if ends else SEG_HEADER) == len(data)  # no marker: the old layout
    with WriteAheadLog(tmp_path, segment_bytes=4096, recycle_segments=3) as new:
        assert new.torn_tail is None
        assert [(r.seq, r.payload) for r in new.replay()] == [
            (s, rec(i).payload) for i, s in enumerate(seqs)
        ]
        new.truncate_before(10**9)
        seqs = fill(new, 50, 12)
    with WriteAheadLog(tmp_path, segment_bytes=4096, recycle_segments=0) as off:
        assert off.torn_tail is None
        assert [r.seq for r in off.replay(seqs[0] - 1)] == seqs
        assert off.spares() == []  # beyond the (now zero) limit: deleted at open
    assert not list(tmp_path.glob("spare-*.wal"))


def test_spares_beyond_the_limit_are_deleted_oldest_first(tmp_path: Path) -> None:
    """Lowering ``recycle_segments`` deletes the oldest spares at open; an unrelated file stays."""
    wal = make_spares(tmp_path, recycle=3)
    spares = wal.spares()
    wal.close()
    (tmp_path / "notes.txt").write_text("x")
    with WriteAheadLog(tmp_path, segment_bytes=4096, recycle_segments=1) as w:
        assert w.spares() == spares[-1:]
    assert sorted(tmp_path.glob("spare-*.wal")) == spares[-1:]
    assert (tmp_path / "notes.txt").exists()


def test_a_marker_left_in_an_older_segment_ends_it(tmp_path: Path) -> None:
    """If a recycled segment's cut at rotation was lost (fsync ``never`` and a power loss), its
    marker still ends it on replay: the stale bytes behind it are never read."""
    wal = make_spares(tmp_path, recycle=1)
    while wal.spares():
        wal.append(rec(700))
    seg = wal.segments()[-1]
    seqs = fill(wal, 701, 8)
    wal.close()
    assert len(WriteAheadLog(tmp_path, segment_bytes=4096).segments()) > 1
    data = seg.path.read_bytes()
    stale = struct.pack("<4sQ", b"ETWE", seg.first_seq) + b"ETWR" + b"\x07" * 500
    seg.path.write_bytes(data + stale)
    with WriteAheadLog(tmp_path, segment_bytes=4096) as w:
        assert [r.seq for r in w.replay(seg.first_seq - 1)] == seqs[: len(seqs)]


def test_recycle_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="recycle_segments"):
        WriteAheadLog(tmp_path, recycle_segments=-1)
    with pytest.raises(ConfigFileError, match="wal_recycle_segments"):
        DurabilityConfig(wal_recycle_segments=-1).validate()
    assert DurabilityConfig().validate().wal_recycle_segments == 0  # opt-in


CHILD = textwrap.dedent(
    """
    import random, sys
    from eventtally.durability.wal import WalRecord, WriteAheadLog

    directory, policy, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wal = WriteAheadLog(directory, fsync=policy, segment_bytes=1 << 20, recycle_segments=4)
    k = start
    while True:
        size = random.Random(k).randrange(1, 1 << 17)
        payload = b"%d|" % k + random.Random(k).randbytes(size)
        seq = wal.append(WalRecord("org", payload, "ing", k))
        active = wal.segments()[-1]  # a recycled file is longer than the records it holds
        print(seq, k, int(active.path.stat().st_size > active.size), flush=True)
        k += 1
        if k % 8 == 0:  # as snapshots would: old segments go, and come back as spares
            wal.truncate_before(seq - 20)
    """
)


def _expected_payload(k: int) -> bytes:
    size = random.Random(k).randrange(1, 1 << 17)
    return b"%d|" % k + random.Random(k).randbytes(size)


@pytest.mark.slow
def test_sigkill_while_appending_into_recycled_segments(tmp_path: Path) -> None:
    """A child appending into recycled segments (removing old ones as it goes) is SIGKILLed, six
    times, each time while it writes into a recycled file (it says so itself); after each, every
    acknowledged record the child kept is present and intact and nothing else replays (no stale
    record of a recycled file). The newest file's size after reopening is no sign either way: a
    record torn by the kill is cut off together with the stale tail behind it."""
    rng = random.Random(11)
    k = 0
    for round_no, policy in enumerate(("always", "never", "always", "interval", "always", "never")):
        # The kill comes at a random moment, but only once the child is writing into a recycled
        # file: on a slow disk (fsync "always") a fixed delay may end before any spare exists,
        # and the round would test nothing of recycling.
        lines = sigkill_child_when(
            [sys.executable, "-c", CHILD, str(tmp_path), policy, str(k)],
            rng.uniform(0.3, 0.8),
            lambda seen: seen[-1].split()[2] == "1",
            f"round {round_no}",
        )
        acknowledged = {}
        for line in lines:
            seq, kk, _recycled = map(int, line.split())
            acknowledged[seq] = kk
        with WriteAheadLog(tmp_path, segment_bytes=1 << 20, recycle_segments=4) as wal:
            records = list(wal.replay())
            segments = wal.segments()
        by_seq = {r.seq: r for r in records}
        oldest = segments[0].first_seq
        for seq, kk in acknowledged.items():
            if seq >= oldest:
                assert seq in by_seq, f"acknowledged record {seq} lost in round {round_no}"
                assert by_seq[seq].payload == _expected_payload(kk)
        assert max(acknowledged) in by_seq
        for r in records:  # intact, and each one was written by a child: k grows with seq
            assert r.payload == _expected_payload(r.received_at_ms)
        seqs = [r.seq for r in records]
        ks = [r.received_at_ms for r in records]
        assert seqs == sorted(set(seqs)) and ks == sorted(set(ks))
        assert ks[-1] <= max(acknowledged.values()) + 1  # at most the one unacknowledged
        k = ks[-1] + 1
