"""WAL segment preallocation: reserved at creation, zero fill behind an end marker, cut on close.

Real files under ``tmp_path`` and a child process killed with SIGKILL while it appends into a
preallocated segment; the layout checked is the one ``docs/durability.md`` documents
("Preallocated segments").
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from eventtally.durability import wal as walmod
from eventtally.durability.wal import END_MAGIC, WalRecord, WriteAheadLog

SEG_HEADER = 24
SEGMENT = 1 << 20


def rec(i: int, size: int = 1000) -> WalRecord:
    return WalRecord("org1", bytes([i % 251]) * size, "in1", 1_715_688_000_000 + i)


def segment_files(d: Path) -> list[Path]:
    return sorted(d.glob("wal-*.log"))


def test_new_segment_is_reserved_whole_with_a_marker_after_its_header(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=SEGMENT)
    try:
        (seg,) = segment_files(tmp_path)
        assert seg.stat().st_size == SEGMENT
        # Blocks are reserved, not a sparse file: the allocation covers the whole segment.
        assert seg.stat().st_blocks * 512 >= SEGMENT
        data = seg.read_bytes()
        assert data[SEG_HEADER : SEG_HEADER + 4] == END_MAGIC
        assert struct.unpack_from("<Q", data, SEG_HEADER + 4)[0] == 1
        assert not data[SEG_HEADER + 12 :].strip(b"\0")
        seq = log.append(rec(1))
        assert seg.stat().st_size == SEGMENT  # the append wrote inside the reservation
        (info,) = log.segments()
        assert info.size < 2000  # records, not the reservation
    finally:
        log.close()
    assert seq == 1


def test_close_cuts_the_zero_fill_and_the_file_is_the_plain_format(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_bytes=SEGMENT) as log:
        for i in range(5):
            log.append(rec(i))
    with WriteAheadLog(tmp_path / "plain", segment_bytes=SEGMENT, preallocate=False) as plain:
        for i in range(5):
            plain.append(rec(i))
    (seg,) = segment_files(tmp_path)
    (plain_seg,) = segment_files(tmp_path / "plain")
    assert seg.read_bytes() == plain_seg.read_bytes()


def test_reopened_after_a_crash_stops_at_the_marker_and_keeps_appending(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=SEGMENT)
    for i in range(3):
        log.append(rec(i))
    # A crash: the process goes away without close(), so the zero fill stays.
    os.close(log._fd)
    log._closed = True
    (seg,) = segment_files(tmp_path)
    assert seg.stat().st_size == SEGMENT
    with WriteAheadLog(tmp_path, segment_bytes=SEGMENT) as again:
        assert again.torn_tail is None
        assert again.last_seq == 3
        again.append(rec(3))
        assert [r.seq for r in again.replay()] == [1, 2, 3, 4]
    with WriteAheadLog(tmp_path) as closed_again:
        payloads = [r.payload for r in closed_again.replay()]
    assert payloads == [rec(i).payload for i in range(4)]


def test_a_torn_record_inside_the_reservation_is_cut(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=SEGMENT)
    log.append(rec(0))
    end = log._offset
    log.append(rec(1))
    os.close(log._fd)
    log._closed = True
    (seg,) = segment_files(tmp_path)
    # Tear the second record: its last bytes and the marker after it read as zeros.
    with open(seg, "r+b") as f:
        f.seek(end + 600)
        f.write(b"\0" * 1000)
    with WriteAheadLog(tmp_path, segment_bytes=SEGMENT) as again:
        assert again.torn_tail is not None
        assert again.torn_tail.offset == end
        assert again.last_seq == 1
        assert again.append(rec(2)) == 3  # seq 2 was claimed by the torn header
        assert [r.seq for r in again.replay()] == [1, 3]


def test_a_failed_write_cuts_the_reservation_and_appends_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=SEGMENT)
    log.append(rec(1))
    end = log._offset
    real = walmod._write_record_at

    def half_then_eio(fd: int, parts: list[bytes], offset: int) -> int:
        os.pwrite(fd, bytes(parts[0])[:7], offset)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(walmod, "_write_record_at", half_then_eio)
    with pytest.raises(OSError):
        log.append(rec(2))
    (seg,) = segment_files(tmp_path)
    assert seg.stat().st_size == end  # cut to the records, reservation and marker gone
    monkeypatch.setattr(walmod, "_write_record_at", real)
    assert log.append(rec(3)) == 3
    log.close()
    with WriteAheadLog(tmp_path) as again:
        assert again.torn_tail is None
        assert [r.seq for r in again.replay()] == [1, 3]


def test_rotation_cuts_the_old_segment_and_reserves_the_next(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_bytes=8192) as log:
        for i in range(12):
            log.append(rec(i))
        files = segment_files(tmp_path)
        assert len(files) > 1
        for old in files[:-1]:
            assert old.stat().st_size < 8192 + 2000  # records only: no reservation left behind
        assert files[-1].stat().st_size >= 8192
        assert [r.seq for r in log.replay()] == list(range(1, 13))
        # Retention counts records: the active file's reservation is not log bytes.
        assert sum(s.size for s in log.segments()) == sum(f.stat().st_size for f in files[:-1]) + (
            log._offset
        )


def test_refused_preallocation_falls_back_to_a_plain_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(walmod.os, "posix_fallocate", refuse)
    with (
        caplog.at_level(logging.INFO, logger="eventtally.wal"),
        WriteAheadLog(tmp_path, segment_bytes=8192) as log,
    ):
        for i in range(12):
            log.append(rec(i))
        assert log._marker == b""
        for seg in segment_files(tmp_path):
            assert seg.read_bytes()[SEG_HEADER : SEG_HEADER + 4] != END_MAGIC
    refusals = [r for r in caplog.records if "cannot preallocate" in r.getMessage()]
    assert len(refusals) == 1  # said once, not at every rotation
    with WriteAheadLog(tmp_path) as reopened:
        assert [r.seq for r in reopened.replay()] == list(range(1, 13))


def test_sigkill_while_appending_into_a_reserved_segment_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    child = textwrap.dedent(
        f"""
        import sys
        from eventtally.durability.wal import WalRecord, WriteAheadLog
        log = WriteAheadLog({str(tmp_path)!r}, segment_bytes=1 << 20)
        i = 0
        while True:
            seq = log.append(WalRecord("org1", bytes([i % 251]) * 3000, "in1", 1, 0))
            print(seq, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    # A stalled child must not hang the read below: it is killed, and readline() returns "".
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    acked = 0
    try:
        # Past one rotation, then a kill in the middle of a reserved segment.
        while acked < 500:
            line = proc.stdout.readline()
            assert line, "the child stopped before it was killed"
            acked = int(line)
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    with WriteAheadLog(tmp_path, segment_bytes=1 << 20) as again:
        records = list(again.replay())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert len(records) >= acked
    for r in records:
        assert r.payload == bytes([(r.seq - 1) % 251]) * 3000


def test_the_server_setting_is_read_and_typed(tmp_path: Path) -> None:
    from eventtally.server.config import ConfigFileError, DurabilityConfig, load_config

    assert DurabilityConfig().validate().wal_preallocate is True
    path = tmp_path / "eventtally.toml"
    path.write_text("[durability]\nwal_preallocate = false\n")
    assert load_config(path).server.durability.wal_preallocate is False
    path.write_text('[durability]\nwal_preallocate = "no"\n')
    with pytest.raises(ConfigFileError, match="wal_preallocate"):
        load_config(path)
