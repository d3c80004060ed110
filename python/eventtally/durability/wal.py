"""Write-ahead log of accepted ingest batches (docs/durability.md).

What this module guarantees:

- Framing. Every record is ``magic ‖ length ‖ crc32 ‖ fields ‖ org id ‖ ingest id ‖ payload``
  (layout in ``docs/durability.md``); the CRC covers every byte after itself plus the length, so a
  torn, truncated or bit-flipped record never replays. The payload is the request body exactly as
  accepted (optionally zlib-compressed, flagged in the record).
- Sequence numbers are u64, strictly increasing in file order, never reused: not across segment
  files and not across restarts (the next number follows the newest record on disk, and
  :meth:`WriteAheadLog.ensure_next_seq` lets recovery push it past any snapshot).
- Durability. :meth:`WriteAheadLog.append` returns only when the record is as durable as the
  policy promises: ``always`` - on disk (``fdatasync``) before it returns, with group commit, so
  one fsync covers every record written before it started; ``interval`` - written to the OS, a
  background thread fsyncs every ``interval_ms``; ``never`` - written to the OS (survives a process
  crash, not a power loss). ``append`` is thread-safe.
- Failures are retryable and sticky. ``append`` raises only :class:`OSError` for I/O trouble (so
  a server answers 503, never 400). A failed write is cut back off the file; a failed fsync
  poisons the log (the kernel may have dropped the dirty pages), and every later append raises
  :class:`WalFailedError` until the log is reopened and recovered. :meth:`WriteAheadLog.refusal`
  says whether (and why) an append would be refused now; after a failed write it probes the disk
  with a write of the same size, cut off again, so readiness returns once the disk has room.
- Crash recovery of the file itself. Opening the log scans the newest segment; a torn last
  record (short header, short payload, CRC mismatch at the tail, zero fill) is cut off at the last
  good record, logged as a WARNING on ``eventtally.wal`` and reported in
  :attr:`WriteAheadLog.torn_tail`. A bad record followed by valid ones is not a torn tail but
  corruption: :class:`WalCorruptionError` is raised (unless ``repair=True``), as it is for any bad
  record in an older segment during :meth:`WriteAheadLog.replay`. Nothing is skipped silently.
- Segments ``wal-<first seq, 20 digits>.log`` rotate at ``segment_bytes``; a rotated segment is
  fsynced first (policies ``always`` and ``interval``). :meth:`WriteAheadLog.truncate_before`
  removes only whole segments below a sequence number and outside the configured retention, oldest
  first, and never the segment being written.
- Recycling. Up to ``recycle_segments`` removed segments are kept as spares
  (``spare-<first seq>.wal``) and the next rotation overwrites one in place instead of creating
  a file: overwriting blocks that are already written (and usually still in the page cache)
  needs no block allocation, no fresh page-cache pages and no metadata journal commit at
  ``fdatasync``, which appending to a new file pays on every record (as PostgreSQL recycles WAL
  segments). A spare gets its new segment header (fsynced) before it is renamed into place, so
  a crash leaves either a spare or a well-formed empty segment. Its old records stay behind the
  live ones; they can never replay: every stale record's sequence number is below the
  segment's first one (names and numbers only grow), and while stale bytes follow the live
  records each append also writes an *end marker* (``ETWE`` + the segment's first sequence
  number) right after its record, so opening tells a clean end (marker) from a torn one (no
  marker: cut as before). A rotated or cut segment is truncated to its live records, so only
  the newest segment ever holds stale bytes, and only past a marker. Segments written without
  recycling are byte for byte the old format; both replay.
- Preallocation (``preallocate=True``, default). A new segment is reserved whole
  (``posix_fallocate`` to ``segment_bytes``) and fsynced with its header and an end marker
  before its first record, so appending inside it allocates no blocks and changes no file
  size. Its zero fill is handled like a recycled file's stale tail: a marker follows the
  newest record, rotation and :meth:`WriteAheadLog.close` cut the file to its records, and a
  torn record before the marker is cut as any torn tail. A refused preallocation (file
  system, free space) leaves a plain segment.

Checksums: a payload given as ``bytes`` is checksummed by the core (``_core.crc32``, crc32fast's
carry-less-multiply kernel, detached from the interpreter; equal to ``zlib.crc32``), anything else
and the short header by ``zlib.crc32``; replay verifies with ``zlib.crc32``.  A record (frame,
payload and the end marker after it) is one ``os.pwritev`` at the log's own offset: one
syscall, and no ``lseek`` back over the marker.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import re
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from eventtally import _core
from eventtally.exceptions import EventtallyIOError

from .files import fsync_dir as _fsync_dir
from .files import make_private_dirs, open_private, pwrite_all

__all__ = [
    "FLAG_USER_MAX",
    "FSYNC_BUCKETS",
    "FsyncPolicy",
    "TornTail",
    "WalClosedError",
    "WalCorruptionError",
    "WalFailedError",
    "WalRecord",
    "WalSegment",
    "WalStats",
    "WriteAheadLog",
    "from_ms",
    "to_ms",
]

log = logging.getLogger("eventtally.wal")

FsyncPolicy = Literal["always", "interval", "never"]
_POLICIES = ("always", "interval", "never")

# ---------------------------------------------------------------------------------------------
# On-disk format (little-endian). docs/durability.md "Record format" is the prose version.
# ---------------------------------------------------------------------------------------------

SEGMENT_MAGIC = b"ETWALSEG"
SEGMENT_VERSION = 1
#: magic, version, reserved (0), first sequence number of the segment (equals the file name).
_SEGMENT_HEADER = struct.Struct("<8sIIQ")

RECORD_MAGIC = b"ETWR"
#: magic, length (bytes after this frame), crc32.
_FRAME = struct.Struct("<4sII")
#: seq, received_at_ms, format flags, caller flags, org id length, ingest id length.
_FIELDS = struct.Struct("<QqBBHH")
_LEN = struct.Struct("<I")

#: Format flag: the payload is zlib-compressed.
_F_ZLIB = 0x01
#: Format flag: the ingest id is ``None`` (distinct from the empty string).
_F_NO_INGEST = 0x02
_F_KNOWN = _F_ZLIB | _F_NO_INGEST

FLAG_USER_MAX = 0xFF
"""Caller flags (:attr:`WalRecord.flags`) are one byte; the log never interprets them."""

_MAX_LENGTH = 0x7FFF_FFFF  # a record larger than 2 GiB is a corrupt length, not a batch
_MAX_NAME = 0xFFFF
_SEQ_MAX = 2**64 - 1
_I64 = 2**63

_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
_SPARE_RE = re.compile(r"^spare-(\d{20})\.wal$")

END_MAGIC = b"ETWE"
#: End marker after the newest record of a recycled segment: magic, the segment's first seq.
_END = struct.Struct("<4sQ")

FSYNC_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Upper bounds (seconds) of the fsync latency histogram in :class:`WalStats`; ``+Inf`` is added."""

#: Largest write a readiness probe makes (``refusal``): a batch is at most a few MiB.
_MAX_PROBE = 16 << 20

_sync = os.fdatasync if hasattr(os, "fdatasync") else os.fsync


def to_ms(seconds: float) -> int:
    """Unix seconds to the integer milliseconds the log stores (rounded). Hand the engine the
    result as ``received_ms``, live and on replay, so both land on exactly this ms."""
    return round(seconds * 1000)


def from_ms(ms: int) -> float:
    """The ``received_at`` (Unix seconds) that makes the engine, which floors ``seconds * 1000``,
    land on exactly ``ms``: the middle of that millisecond, so no float rounding can move it
    (for callers that only take seconds; the engine takes ``received_ms`` exactly)."""
    return (ms + 0.5) / 1000


@dataclass(frozen=True, slots=True)
class WalRecord:
    """One accepted batch. ``seq`` is 0 when appending and the assigned number when replayed."""

    org_id: str
    payload: bytes
    ingest_id: str | None = None
    received_at_ms: int = 0
    flags: int = 0
    seq: int = 0

    @property
    def received_at(self) -> float:
        """``received_at_ms`` in Unix seconds, as ``Engine.ingest(received_at=...)`` takes it."""
        return self.received_at_ms / 1000


@dataclass(frozen=True, slots=True)
class TornTail:
    """What opening the log cut off the end of its newest segment."""

    segment: Path
    offset: int
    """Length of the file after the cut (the end of the last good record)."""
    bytes_cut: int
    reason: str
    records_discarded: int = 0
    """Valid records found after the bad one and discarded (only with ``repair=True``)."""


@dataclass(frozen=True, slots=True)
class WalSegment:
    """One segment file: its first sequence number (from its name), path and size (of its
    records: a recycled active segment's file is larger)."""

    first_seq: int
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class WalStats:
    """Counters for metrics, since the log was opened."""

    records: int
    bytes_written: int
    fsyncs: int
    fsync_seconds: float
    fsync_buckets: tuple[tuple[float, int], ...]
    """Cumulative ``(upper bound, count)`` pairs, Prometheus style, ending with ``inf``."""
    segments: int
    last_seq: int
    synced_seq: int


class WalCorruptionError(EventtallyIOError):
    """A record in the middle of the log is damaged; replaying past it would lose or invent data.

    ``path`` and ``offset`` locate the bad record, ``reason`` says what is wrong with it. The log
    is left untouched: move the damaged segment aside (or open with ``repair=True`` when it is the
    newest one) after saving a copy.
    """

    path: str
    offset: int
    reason: str


class WalClosedError(OSError):
    """``append`` on a closed log (an OSError: the batch is retryable)."""


class WalFailedError(OSError):
    """An earlier fsync or write failed; the log refuses appends until reopened."""


class _Defect(Exception):
    """Internal: the record at ``offset`` cannot be read (``reason``)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


@dataclass(slots=True)
class _Raw:
    """A record header parsed from a buffer; the payload is ``buf[payload_start:end]``."""

    seq: int
    received_at_ms: int
    fmt: int
    flags: int
    org_id: str
    ingest_id: str | None
    payload_start: int
    end: int
    verified: bool


def _segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.log"


def _spare_name(first_seq: int) -> str:
    return f"spare-{first_seq:020d}.wal"


def _end_marker(first_seq: int) -> bytes:
    return _END.pack(END_MAGIC, first_seq)


#: The log writes its records through this module-level name, so a test can make the disk fail
#: part way.  Every write to a segment is positional: the file position is never relied on.
_write_record_at = pwrite_all


def _parse(
    buf: bytes | mmap.mmap,
    pos: int,
    end: int,
    prev_seq: int,
    where: Callable[[int, str], bool] | None,
) -> _Raw:
    """Parse the record at ``pos``; raise :class:`_Defect` if it is incomplete or damaged.

    With ``where`` given and false for the record, the payload is not read or verified (recovery
    skips records a snapshot already covers without touching their bytes).
    """
    if end - pos < _FRAME.size:
        raise _Defect(pos, f"short record frame ({end - pos} of {_FRAME.size} bytes)")
    magic, length, crc = _FRAME.unpack_from(buf, pos)
    if magic != RECORD_MAGIC:
        raise _Defect(pos, f"bad record magic {bytes(magic)!r}")
    if length < _FIELDS.size or length > _MAX_LENGTH:
        raise _Defect(pos, f"implausible record length {length}")
    body = pos + _FRAME.size
    if end - body < length:
        raise _Defect(pos, f"short record ({end - body} of {length} bytes after the frame)")
    seq, received, fmt, flags, org_len, ing_len = _FIELDS.unpack_from(buf, body)
    names = body + _FIELDS.size
    payload_start = names + org_len + ing_len
    rec_end = body + length
    if payload_start > rec_end or fmt & ~_F_KNOWN:
        raise _Defect(pos, "bad record fields")
    org_id: str | None = None
    ingest_id: str | None = None
    try:
        org_id = bytes(buf[names : names + org_len]).decode()
        if not fmt & _F_NO_INGEST:
            ingest_id = bytes(buf[names + org_len : payload_start]).decode()
    except UnicodeDecodeError:
        bad_names = True  # verify below: a crc mismatch explains it; a match is a writer bug
        wanted = True
    else:
        bad_names = False
        wanted = where is None or where(seq, org_id)
    if wanted:
        view = memoryview(buf)
        try:
            got = zlib.crc32(view[payload_start:rec_end])
            got = zlib.crc32(_LEN.pack(length), got)
            got = zlib.crc32(view[body:payload_start], got)
        finally:
            view.release()
        if got != crc:
            raise _Defect(pos, "crc mismatch")
        if bad_names:
            raise _Defect(pos, "org or ingest id is not UTF-8")
    if seq <= prev_seq:
        raise _Defect(pos, f"sequence number {seq} does not follow {prev_seq}")
    return _Raw(seq, received, fmt, flags, org_id or "", ingest_id, payload_start, rec_end, wanted)


def _has_valid_record_after(buf: bytes | mmap.mmap, start: int, end: int, prev_seq: int) -> int:
    """How many valid records with a higher sequence number follow ``start`` (a torn write
    leaves none; finding one means the damage is in the middle of the data)."""
    found = 0
    pos = start
    while True:
        pos = buf.find(RECORD_MAGIC, pos, end)
        if pos < 0:
            return found
        try:
            raw = _parse(buf, pos, end, prev_seq, None)
        except _Defect:
            pos += 1
            continue
        found += 1
        prev_seq = raw.seq
        pos = raw.end


def _only_org(org_id: str, where: Callable[[int, str], bool] | None) -> Callable[[int, str], bool]:
    def pick(seq: int, org: str) -> bool:
        return org == org_id and (where is None or where(seq, org))

    return pick


def _torn_seq(buf: bytes, pos: int, end: int, prev_seq: int) -> int:
    """The sequence number a torn record at ``pos`` was given, when its header got written
    (so it is never handed out again), else ``prev_seq``."""
    if end - pos < _FRAME.size + 8 or buf[pos : pos + 4] != RECORD_MAGIC:
        return prev_seq
    (seq,) = struct.unpack_from("<Q", buf, pos + _FRAME.size)
    # Only a plausible successor: garbage must not push the counter towards 2**64.
    return int(seq) if prev_seq < seq <= prev_seq + 1_000_000 else prev_seq


class WriteAheadLog:
    """An append-only, segmented, checksummed log of accepted batches in ``directory``.

    ``fsync``: ``"always"`` (default, group commit), ``"interval"`` (every ``interval_ms`` in the
    background) or ``"never"``. ``segment_bytes``: rotate after a segment reaches this size.
    ``retain_bytes`` / ``retain_seconds``: :meth:`truncate_before` keeps at least this many of the
    newest bytes / segments modified this recently (for backfill). ``compress_level``: 0 stores
    payloads as they are (default), 1-9 zlib-compresses them (level 1: about 1.3 ms and a 5x
    reduction per 300 KB Segment batch). ``repair``: cut the newest segment at its first bad
    record even when valid records follow (they are logged and discarded). ``on_fsync(seconds)``
    is called after every fsync, under the log's lock: keep it cheap (a histogram ``observe``)
    and do not call back into the log. ``recycle_segments``: how many segments
    :meth:`truncate_before` keeps as spares for later rotations to overwrite in place (0: delete
    them, and every segment is a new file). ``preallocate``: reserve each new segment's
    ``segment_bytes`` when it is created (``posix_fallocate``; default), so appends neither
    allocate blocks nor grow the file; refused by the file system, segments grow as before.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        interval_ms: float = 100.0,
        segment_bytes: int = 64 << 20,
        retain_bytes: int = 0,
        retain_seconds: float = 0.0,
        compress_level: int = 0,
        repair: bool = False,
        on_fsync: Callable[[float], None] | None = None,
        recycle_segments: int = 0,
        preallocate: bool = True,
    ) -> None:
        if fsync not in _POLICIES:
            raise ValueError(f"fsync must be one of {_POLICIES}, not {fsync!r}")
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        if segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4096")
        if not 0 <= compress_level <= 9:
            raise ValueError("compress_level must be 0 (off) to 9")
        if recycle_segments < 0:
            raise ValueError("recycle_segments must not be negative")
        self.directory = Path(directory)
        self.fsync: FsyncPolicy = fsync
        self.interval_ms = float(interval_ms)
        self.segment_bytes = int(segment_bytes)
        self.retain_bytes = int(retain_bytes)
        self.retain_seconds = float(retain_seconds)
        self.compress_level = int(compress_level)
        self._on_fsync = on_fsync
        self.recycle_segments = int(recycle_segments)
        self.preallocate = bool(preallocate)

        self._cond = threading.Condition(threading.Lock())
        self._segments: list[int] = []  # first seqs, oldest first; the last one is active
        self._fd = -1
        self._offset = 0
        self._next_seq = 1
        self._last_seq = 0
        self._synced_seq = 0
        self._syncing = False
        self._pending_close: list[int] = []
        # Stale bytes of a recycled file, or the zero fill of a preallocated one, follow the
        # live records of the active segment: every append then writes ``_marker`` after its
        # record (see the module doc).
        self._marker = b""
        # What follows the marker is our own preallocated zero fill (not a recycled file's
        # stale records): a clean close cuts it, so a closed log's files hold records only.
        self._zero_tail = False
        self._spares: list[int] = []  # first seqs of spare files, ascending
        self._failed: OSError | None = None
        # The last append's write failed (not sticky: disk full clears); probe size in bytes.
        self._write_error: OSError | None = None
        self._probe_bytes = 0
        self._preallocate_refused = False
        self._closed = False
        self._records = 0
        self._bytes_written = 0
        self._fsyncs = 0
        self._fsync_seconds = 0.0
        self._fsync_hist = [0] * (len(FSYNC_BUCKETS) + 1)

        #: What opening cut off the newest segment, or ``None`` when it ended cleanly.
        self.torn_tail: TornTail | None = None
        make_private_dirs(self.directory)
        self._open(repair)

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if fsync == "interval":
            self._thread = threading.Thread(
                target=self._interval_loop, name="eventtally-wal-fsync", daemon=True
            )
            self._thread.start()

    # ----------------------------------------------------------------------------- opening

    def _path(self, first_seq: int) -> Path:
        return self.directory / _segment_name(first_seq)

    def _open(self, repair: bool) -> None:
        names = os.listdir(self.directory)
        firsts = sorted(int(m.group(1)) for n in names if (m := _SEGMENT_RE.match(n)) is not None)
        self._spares = sorted(int(m.group(1)) for n in names if (m := _SPARE_RE.match(n)))
        self._trim_spares()
        if not firsts:
            self._segments = [1]
            self._fd, preallocated = self._create_segment(1)
            self._offset = _SEGMENT_HEADER.size
            self._marker = _end_marker(1) if preallocated else b""
            self._zero_tail = preallocated
            return
        self._segments = firsts
        first = firsts[-1]
        path = self._path(first)
        last_seq, end, torn_seq, marked, zeros = self._check_newest(path, first, repair)
        self._marker = _end_marker(first) if marked else b""
        self._zero_tail = zeros
        # An empty newest segment: its name says every record on disk is below ``first``.
        self._last_seq = self._synced_seq = max(last_seq, first - 1)
        self._next_seq = max(self._last_seq, torn_seq) + 1
        self._fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        self._offset = end
        # What the previous process wrote may still be only in the page cache.
        if self.fsync != "never":
            _sync(self._fd)

    def _check_newest(
        self, path: Path, first: int, repair: bool
    ) -> tuple[int, int, int, bool, bool]:
        """Scan the newest segment and cut a torn tail: (last seq or 0, good length, the seq a
        torn record had claimed or 0, whether an end marker ends the records, whether only
        zeros follow that marker: a preallocated fill rather than stale recycled records)."""
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        hdr = _SEGMENT_HEADER.size
        if size < hdr or not data.strip(b"\0"):
            # Crashed while creating the segment: nothing in it was ever acknowledged.
            self._rewrite_header(path, first)
            if size:
                self._report_torn(TornTail(path, hdr, size, "incomplete segment header"))
            return 0, hdr, 0, False, False
        magic, version, _reserved, hdr_first = _SEGMENT_HEADER.unpack_from(data, 0)
        if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION or hdr_first != first:
            raise WalCorruptionError(
                f"{path}: not an eventtally WAL segment of version {SEGMENT_VERSION} "
                f"starting at {first} (magic {magic!r}, version {version}, first {hdr_first})",
                path=str(path),
                offset=0,
                reason="bad segment header",
            )
        pos, last = hdr, 0
        prev = first - 1
        marker = _end_marker(first)
        while pos < size:
            if data.startswith(marker, pos):
                # A clean end: what follows is an older life of the file, or preallocated zeros.
                rest = size - pos - _END.size
                return last, pos, 0, True, data[pos + _END.size :] == bytes(rest)
            try:
                raw = _parse(data, pos, size, prev, None)
            except _Defect as defect:
                after = _has_valid_record_after(data, defect.offset + 1, size, prev)
                if after and not repair:
                    raise WalCorruptionError(
                        f"{path}: record at offset {defect.offset} is damaged ({defect.reason}) "
                        f"but {after} valid record(s) follow it; this is not a torn write. "
                        "Keep a copy of the file, then open with repair=True to cut it there.",
                        path=str(path),
                        offset=defect.offset,
                        reason=defect.reason,
                    ) from None
                if after:
                    log.error(
                        "WAL %s: repair discards %d valid record(s) after the damaged record "
                        "at offset %d (%s)",
                        path, after, defect.offset, defect.reason,
                    )  # fmt: skip
                os.truncate(path, pos)
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
                self._report_torn(TornTail(path, pos, size - pos, defect.reason, after))
                return last, pos, _torn_seq(data, pos, size, prev), False, False
            prev = last = raw.seq
            pos = raw.end
        return last, pos, 0, False, False

    def _report_torn(self, torn: TornTail) -> None:
        self.torn_tail = torn
        log.warning(
            "WAL %s: cut a torn tail of %d byte(s) at offset %d (%s); the record being written "
            "when the process stopped was never acknowledged",
            torn.segment, torn.bytes_cut, torn.offset, torn.reason,
        )  # fmt: skip

    def _rewrite_header(self, path: Path, first: int) -> None:
        with open(path, "wb") as f:
            f.write(_SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, first))
            f.flush()
            os.fsync(f.fileno())

    def _trim_spares(self) -> None:
        """Delete spares beyond ``recycle_segments`` (the oldest first: the newest are likelier
        to be in the page cache)."""
        extra = len(self._spares) - self.recycle_segments
        if extra <= 0:
            return
        for first in self._spares[:extra]:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / _spare_name(first)).unlink()
        self._spares = self._spares[extra:]

    def _reuse_spare(self, first_seq: int) -> int | None:
        """Turn the newest spare into segment ``first_seq`` (lock held); its fd, or ``None``
        when there is no spare or reusing it failed (the caller then creates a file).

        The new header and the end marker right after it are written and fsynced while the
        file still has its spare name, and only then is it renamed: a crash leaves either a
        spare or an empty, well-formed segment whose stale records all lie past a marker.
        """
        while self._spares:
            spare = self.directory / _spare_name(self._spares.pop())
            try:
                fd = os.open(spare, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                log.warning("WAL: spare %s unusable (%s); deleted", spare.name, exc)
                with contextlib.suppress(OSError):
                    spare.unlink()
                continue
            try:
                head = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, first_seq)
                pwrite_all(fd, [head, _end_marker(first_seq)], 0)
                if self.fsync != "never":
                    _sync(fd)
                os.rename(spare, self._path(first_seq))
                if self.fsync != "never":
                    _fsync_dir(self.directory)
                if hasattr(os, "posix_fadvise"):
                    # Pages evicted since the spare was last written are read back ahead of the
                    # writes: a record that covers part of an uncached page would wait for it.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError as exc:
                os.close(fd)
                log.warning("WAL: could not reuse spare %s (%s); creating a file", spare, exc)
                with contextlib.suppress(OSError):
                    spare.unlink()
                return None
            return fd
        return None

    def _create_segment(self, first_seq: int) -> tuple[int, bool]:
        """Create segment ``first_seq`` (lock held): its fd, with the header written, and
        whether it was preallocated to ``segment_bytes`` (then an end marker follows the header
        and the caller must keep writing markers).

        Preallocation (``posix_fallocate``) reserves the segment's blocks at once, so appends
        inside it neither allocate blocks nor grow the file: each ``fdatasync`` then commits no
        size change, and a full disk shows up here, at rotation, rather than on a record. A
        file system that refuses it (or has no room for a whole segment) gets a plain segment
        that grows as records arrive, as before; that is logged once at INFO.
        """
        path = self._path(first_seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = open_private(path, flags)
        try:
            preallocated = self.preallocate and self._preallocate(fd)
            head: list[bytes | bytearray | memoryview] = [
                _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, first_seq)
            ]
            if preallocated:
                head.append(_end_marker(first_seq))
            pwrite_all(fd, head, 0)
            if self.fsync != "never":
                # fsync, not fdatasync, after a preallocation: the file's size is metadata that
                # must be on disk before a record is acknowledged inside it.
                (os.fsync if preallocated else _sync)(fd)
                _fsync_dir(self.directory)  # the new name must survive a power loss too
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return fd, preallocated

    def _preallocate(self, fd: int) -> bool:
        """Reserve ``segment_bytes`` for the empty file ``fd``; ``False`` (file left empty) when
        the file system or the free space does not allow it."""
        if not hasattr(os, "posix_fallocate"):  # pragma: no cover - macOS, Windows
            return False
        try:
            os.posix_fallocate(fd, 0, self.segment_bytes)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a partial reservation would read as a zero tail
            if not self._preallocate_refused:
                self._preallocate_refused = True
                log.info(
                    "WAL: cannot preallocate %d-byte segments in %s (%s); segments grow as "
                    "records arrive",
                    self.segment_bytes, self.directory, exc,
                )  # fmt: skip
            return False
        return True

    # ----------------------------------------------------------------------------- appending

    def append(self, record: WalRecord) -> int:
        """Append ``record`` and return its sequence number once it is durable per the policy.

        Raises :class:`OSError` (disk full, I/O error, :class:`WalClosedError`,
        :class:`WalFailedError`) when the record could not be logged: the batch must then be
        refused with a retryable status. ``ValueError``/``TypeError`` for a malformed record.
        """
        org = record.org_id.encode()
        ingest = b"" if record.ingest_id is None else record.ingest_id.encode()
        if len(org) > _MAX_NAME or len(ingest) > _MAX_NAME:
            raise ValueError("org_id and ingest_id must be at most 65535 UTF-8 bytes")
        if not isinstance(record.received_at_ms, int) or isinstance(record.received_at_ms, bool):
            raise TypeError("received_at_ms must be an int (use wal.to_ms(seconds))")
        if not -_I64 <= record.received_at_ms < _I64:
            raise ValueError("received_at_ms is out of the 64-bit range")
        if not 0 <= record.flags <= FLAG_USER_MAX:
            raise ValueError(f"flags must be 0..{FLAG_USER_MAX}")
        payload: bytes | bytearray | memoryview = record.payload
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}")
        if isinstance(payload, memoryview) and payload.itemsize != 1:
            payload = payload.cast("B")  # lengths below are in bytes
        fmt = 0 if record.ingest_id is not None else _F_NO_INGEST
        if self.compress_level:
            payload = zlib.compress(payload, self.compress_level)
            fmt |= _F_ZLIB
        names = org + ingest
        length = _FIELDS.size + len(names) + len(payload)
        if length > _MAX_LENGTH:
            raise ValueError("record too large for the log (2 GiB)")
        # The payload's CRC is computed before taking the lock; the header's is chained onto it.
        # A batch (bytes) is checksummed by the core, several times faster than the system zlib
        # and without the interpreter; another buffer type by zlib, which reads it in place.
        crc_body = _core.crc32(payload) if isinstance(payload, bytes) else zlib.crc32(payload)
        crc_payload = zlib.crc32(_LEN.pack(length), crc_body)
        with self._cond:
            self._check_writable()
            seq = self._next_seq
            if seq > _SEQ_MAX:
                raise OverflowError("WAL sequence numbers exhausted")
            self._next_seq = seq + 1
            head = _FIELDS.pack(
                seq, record.received_at_ms, fmt, record.flags, len(org), len(ingest)
            )
            head += names
            crc = zlib.crc32(head, crc_payload)
            frame = _FRAME.pack(RECORD_MAGIC, length, crc) + head
            marker = self._marker
            parts: list[bytes | bytearray | memoryview] = [frame, payload]
            if marker:
                parts.append(marker)
            try:
                written = _write_record_at(self._fd, parts, self._offset)
            except OSError as exc:
                self._write_error = exc
                self._probe_bytes = len(frame) + len(payload)
                self._undo_write()
                raise
            if marker:
                # The next record overwrites the marker: the log's offset stays at its start.
                written -= len(marker)
            self._write_error = None
            self._offset += written
            self._bytes_written += written
            self._records += 1
            self._last_seq = seq
            if self._offset >= self.segment_bytes:
                self._rotate()
            if self.fsync == "always":
                self._wait_durable(seq)
        return seq

    def _check_writable(self) -> None:
        if self._closed:
            raise WalClosedError(f"write-ahead log {self.directory} is closed")
        if self._failed is not None:
            raise WalFailedError(
                f"write-ahead log {self.directory} failed earlier ({self._failed}); "
                "restart to recover"
            ) from self._failed

    def refusal(self) -> str | None:
        """Why an append would be refused now, or ``None`` when the log takes appends.

        A closed or failed (sticky) log always refuses.  After a failed write (disk full, I/O
        error: not sticky) the log probes the disk: it writes as many zero bytes as the failed
        record past the end of the active segment and cuts them off again.  When that succeeds, an
        append of that size would too, and the refusal clears (a crash mid-probe leaves a zero
        fill, which opening cuts as a torn tail).  Cheap when healthy: no I/O at all.
        """
        with self._cond:
            if self._closed:
                return f"the write-ahead log {self.directory} is closed"
            if self._failed is not None:
                return f"the write-ahead log failed ({self._failed}); restart to recover"
            if self._write_error is None:
                return None
            size = min(self._probe_bytes, _MAX_PROBE)
            try:
                done = 0
                while done < size:
                    n = os.pwrite(self._fd, bytes(min(size - done, 1 << 20)), self._offset + done)
                    if n <= 0:
                        raise OSError(errno.ENOSPC, "the probe write made no progress")
                    done += n
            except OSError as exc:
                self._write_error = exc
                return f"the write-ahead log cannot write ({exc})"
            finally:
                self._undo_write()
            if self._failed is not None:
                return f"the write-ahead log failed ({self._failed}); restart to recover"
            self._write_error = None
            return None

    def _undo_write(self) -> None:
        """Cut a partly written record so the segment stays well-formed (lock held). A recycled
        segment loses its stale tail (and with it the need for a marker)."""
        try:
            os.ftruncate(self._fd, self._offset)
            self._marker = b""
            self._zero_tail = False
        except OSError as exc:
            log.error("WAL: could not cut a failed write back off (%s); refusing appends", exc)
            self._failed = exc
            self._cond.notify_all()

    def _rotate(self) -> None:
        """Start a new segment (lock held). A failure keeps the current one growing."""
        old = self._fd
        truncated = bool(self._marker)
        if truncated:
            # Only the newest segment may hold stale bytes: replay reads older ones to the end.
            try:
                os.ftruncate(old, self._offset)
            except OSError as exc:
                log.error("WAL: could not cut a recycled segment to its records (%s)", exc)
                self._failed = exc
                self._cond.notify_all()
                raise WalFailedError(f"truncating the write-ahead log failed: {exc}") from exc
            self._marker = b""
            self._zero_tail = False
        if self.fsync != "never":
            try:
                # fsync, not fdatasync, after a cut: the smaller size must be on disk before the
                # next segment exists (only the newest segment may hold stale bytes).
                self._sync_fd_locked(old, full=truncated)
            except OSError as exc:
                log.error("WAL fsync failed (%s); refusing appends until restart", exc)
                self._failed = exc
                self._cond.notify_all()
                raise WalFailedError(f"fsync of the write-ahead log failed: {exc}") from exc
        reused = self._reuse_spare(self._next_seq)
        try:
            new, marked = (
                (reused, True) if reused is not None else self._create_segment(self._next_seq)
            )
        except OSError as exc:
            log.error("WAL: could not rotate to a new segment (%s); continuing in the old one", exc)
            return
        self._segments.append(self._next_seq)
        self._fd = new
        self._offset = _SEGMENT_HEADER.size
        if marked:
            self._marker = _end_marker(self._next_seq)
            self._zero_tail = reused is None
        if self._syncing:
            self._pending_close.append(old)  # a group-commit leader is fsyncing it right now
        else:
            os.close(old)

    def _sync_fd_locked(self, fd: int, *, full: bool = False) -> None:
        """fsync ``fd`` while holding the lock (rotation): covers everything written so far."""
        t0 = time.perf_counter()
        (os.fsync if full else _sync)(fd)
        self._observe(time.perf_counter() - t0)
        self._synced_seq = self._last_seq
        self._cond.notify_all()

    def _wait_durable(self, seq: int) -> None:
        """Group commit (lock held): lead an fsync or wait for the one in flight to cover us."""
        while self._synced_seq < seq:
            if self._failed is not None:
                raise WalFailedError(f"fsync of the write-ahead log failed: {self._failed}")
            if self._syncing:
                self._cond.wait()
            else:
                self._lead_sync()

    def _lead_sync(self) -> None:
        """fsync the active segment with the lock released (lock held on entry and exit).

        Everything written before the call is covered: earlier segments were fsynced when they
        rotated. Appenders write their records meanwhile and are covered by the next fsync.
        """
        target, fd = self._last_seq, self._fd
        self._syncing = True
        error: OSError | None = None
        self._cond.release()
        t0 = time.perf_counter()
        try:
            _sync(fd)
        except OSError as exc:
            error = exc
        finally:
            elapsed = time.perf_counter() - t0
            self._cond.acquire()
            self._syncing = False
            for stale in self._pending_close:
                with contextlib.suppress(OSError):
                    os.close(stale)
            self._pending_close.clear()
            self._cond.notify_all()
        if error is not None:
            log.error("WAL fsync failed (%s); refusing appends until restart", error)
            self._failed = error
            raise WalFailedError(f"fsync of the write-ahead log failed: {error}") from error
        self._observe(elapsed)
        self._synced_seq = max(self._synced_seq, target)

    def _observe(self, seconds: float) -> None:
        self._fsyncs += 1
        self._fsync_seconds += seconds
        i = 0
        while i < len(FSYNC_BUCKETS) and seconds > FSYNC_BUCKETS[i]:
            i += 1
        self._fsync_hist[i] += 1
        if self._on_fsync is not None:
            try:
                self._on_fsync(seconds)
            except Exception:  # a metrics hook must never break durability
                log.exception("WAL on_fsync hook failed")

    def _interval_loop(self) -> None:
        while not self._stop.wait(self.interval_ms / 1000):
            with self._cond:
                if self._closed:
                    return
                if self._failed is None and not self._syncing and self._last_seq > self._synced_seq:
                    with contextlib.suppress(WalFailedError):  # logged; appends now refuse
                        self._lead_sync()

    def sync(self) -> None:
        """fsync now, whatever the policy (a graceful shutdown calls it before snapshotting)."""
        with self._cond:
            self._check_writable()
            self._wait_durable(self._last_seq)

    def ensure_next_seq(self, next_seq: int) -> None:
        """Make the next sequence number at least ``next_seq``: recovery passes one past the
        newest snapshot, so a lost or wiped log can never hand out a number a snapshot covers."""
        with self._cond:
            if next_seq > self._next_seq:
                log.warning(
                    "WAL: next sequence number raised from %d to %d (a snapshot is newer than "
                    "the log)",
                    self._next_seq, next_seq,
                )  # fmt: skip
                self._next_seq = next_seq

    # ----------------------------------------------------------------------------- reading

    def replay(
        self,
        after_seq: int = 0,
        *,
        org_id: str | None = None,
        where: Callable[[int, str], bool] | None = None,
    ) -> Iterator[WalRecord]:
        """Records with ``seq > after_seq``, in order, across segments, as of the call.

        ``org_id`` keeps one organization's records; ``where(seq, org_id)`` decides per record
        from its header alone. Records left out are neither read nor verified (a snapshot covers
        them); every record yielded has been checked against its CRC. Raises
        :class:`WalCorruptionError` at the first damaged record. Safe to run while appending
        (it reads up to where the log was when called); a segment deleted meanwhile by
        :meth:`truncate_before` is skipped with a WARNING.
        """
        with self._cond:
            segments = list(self._segments)
            active_end = self._offset
        if org_id is not None:
            where = _only_org(org_id, where)
        for i, first in enumerate(segments):
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            if nxt is not None and nxt <= after_seq + 1:
                continue  # every record in it is below nxt, hence at most after_seq
            path = self._path(first)
            limit = active_end if nxt is None else None
            try:
                yield from self._replay_segment(path, first, nxt, limit, after_seq, where)
            except FileNotFoundError:
                log.warning("WAL segment %s was deleted during replay; skipped", path)

    def _replay_segment(
        self,
        path: Path,
        first: int,
        nxt: int | None,
        limit: int | None,
        after_seq: int,
        where: Callable[[int, str], bool] | None,
    ) -> Iterator[WalRecord]:
        """One segment's records; names bound them: ``first <= seq < nxt``."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            end = size if limit is None else min(size, limit)

            def corrupt(offset: int, reason: str) -> WalCorruptionError:
                return WalCorruptionError(
                    f"{path}: damaged record at offset {offset}: {reason}",
                    path=str(path),
                    offset=offset,
                    reason=reason,
                )

            if end < _SEGMENT_HEADER.size:
                raise corrupt(0, "short segment header")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            magic, version, _r, hdr_first = _SEGMENT_HEADER.unpack_from(buf, 0)
            if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION or hdr_first != first:
                raise corrupt(0, "bad segment header")
            pos = _SEGMENT_HEADER.size
            prev = first - 1
            marker = _end_marker(first)

            def keep(seq: int, org: str) -> bool:
                return seq > after_seq and (where is None or where(seq, org))

            while pos < end:
                if buf[pos : pos + _END.size] == marker:
                    break  # a recycled file's live end (normally cut at rotation)
                try:
                    raw = _parse(buf, pos, end, prev, keep)
                except _Defect as defect:
                    raise corrupt(defect.offset, defect.reason) from None
                if nxt is not None and raw.seq >= nxt:
                    raise corrupt(pos, f"sequence number {raw.seq} belongs to a later segment")
                prev = raw.seq
                pos = raw.end
                if raw.verified:
                    payload = buf[raw.payload_start : raw.end]
                    if raw.fmt & _F_ZLIB:
                        payload = zlib.decompress(payload)
                    yield WalRecord(
                        raw.org_id, payload, raw.ingest_id, raw.received_at_ms, raw.flags, raw.seq
                    )
        finally:
            buf.close()

    # ----------------------------------------------------------------------------- maintenance

    def truncate_before(self, seq: int, *, dry_run: bool = False) -> list[Path]:
        """Remove whole segments holding only records below ``seq`` and outside the retention.

        Pass one more than the highest sequence number every organization's snapshots cover
        (``SnapshotFiles.safe_wal_seq(orgs) + 1``). Only a prefix of segments (oldest first) is
        removed, and never the active one: the newest of them become spares while there are
        fewer than ``recycle_segments``, the others are deleted. Returns the removed segments'
        paths; with ``dry_run`` nothing is removed and the paths that would be are returned.
        """
        now = time.time()
        with self._cond:
            segments = list(self._segments)
            active_end = self._offset if self._marker else None
        sizes: list[int] = []
        mtimes: list[float] = []
        for first in segments:
            try:
                st = self._path(first).stat()
            except FileNotFoundError:
                sizes.append(0)
                mtimes.append(0.0)
            else:
                # The active file's zero fill or stale tail is not log: retention counts records.
                active = first == segments[-1] and active_end is not None
                sizes.append(active_end if active and active_end is not None else st.st_size)
                mtimes.append(st.st_mtime)
        doomed: list[int] = []
        newer_bytes = sum(sizes)
        for i in range(len(segments) - 1):
            newer_bytes -= sizes[i]  # bytes in segments newer than this one
            covered = segments[i + 1] <= seq
            kept_by_bytes = newer_bytes < self.retain_bytes
            kept_by_age = self.retain_seconds > 0 and mtimes[i] >= now - self.retain_seconds
            if not covered or kept_by_bytes or kept_by_age:
                break
            doomed.append(segments[i])
        if not doomed:
            return []
        if dry_run:
            return [self._path(first) for first in doomed]
        with self._cond:
            self._segments = [s for s in self._segments if s not in doomed]
            room = max(0, self.recycle_segments - len(self._spares))
        deleted: list[Path] = []
        kept: list[int] = []
        for i, first in enumerate(doomed):
            path = self._path(first)
            try:
                if len(doomed) - i <= room:
                    os.rename(path, self.directory / _spare_name(first))
                    kept.append(first)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            deleted.append(path)
        if deleted and self.fsync != "never":
            _fsync_dir(self.directory)
        if kept:
            with self._cond:
                self._spares = sorted(self._spares + kept)
                self._trim_spares()
        log.info(
            "WAL: removed %d segment(s) below seq %d (%d kept as spares)",
            len(deleted), seq, len(kept),
        )  # fmt: skip
        return deleted

    def spares(self) -> list[Path]:
        """The spare files a later rotation will overwrite, oldest first."""
        with self._cond:
            return [self.directory / _spare_name(first) for first in self._spares]

    def segments(self) -> list[WalSegment]:
        """The segment files, oldest first (the last one is being written)."""
        with self._cond:
            firsts = list(self._segments)
            active_end = self._offset if self._marker else None
        out = []
        for first in firsts:
            path = self._path(first)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if first == firsts[-1] and active_end is not None:
                size = active_end  # a recycled file: its stale tail is not log
            out.append(WalSegment(first, path, size))
        return out

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record written (0 when the log is empty)."""
        with self._cond:
            return self._last_seq

    @property
    def next_seq(self) -> int:
        """The number the next appended record will get."""
        with self._cond:
            return self._next_seq

    @property
    def first_seq(self) -> int:
        """First sequence number the oldest retained segment may hold (from its name)."""
        with self._cond:
            return self._segments[0]

    def stats(self) -> WalStats:
        """A consistent copy of the counters."""
        with self._cond:
            cumulative = []
            running = 0
            for bound, count in zip((*FSYNC_BUCKETS, float("inf")), self._fsync_hist, strict=True):
                running += count
                cumulative.append((bound, running))
            return WalStats(
                records=self._records,
                bytes_written=self._bytes_written,
                fsyncs=self._fsyncs,
                fsync_seconds=self._fsync_seconds,
                fsync_buckets=tuple(cumulative),
                segments=len(self._segments),
                last_seq=self._last_seq,
                synced_seq=self._synced_seq,
            )

    # ----------------------------------------------------------------------------- closing

    def close(self) -> None:
        """fsync what was written (whatever the policy) and close. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            try:
                if self._failed is None and self._zero_tail:
                    # A closed log's preallocated file holds records only: the zero fill is
                    # cut and the smaller size made durable (fsync, not fdatasync). A recycled
                    # file keeps its stale tail behind the marker, for the next start to reuse.
                    os.ftruncate(self._fd, self._offset)
                    self._marker = b""
                    self._zero_tail = False
                    self._sync_fd_locked(self._fd, full=True)
                elif self._failed is None and self._synced_seq < self._last_seq:
                    self._sync_fd_locked(self._fd)
            finally:
                self._closed = True
                for fd in (*self._pending_close, self._fd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._pending_close.clear()
                self._cond.notify_all()

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"WriteAheadLog({str(self.directory)!r}, fsync={self.fsync!r}, "
            f"last_seq={self._last_seq})"
        )


if sys.platform == "darwin":  # pragma: no cover - documented: fsync is not a barrier on macOS
    log.debug("eventtally.wal: on macOS fsync does not flush the drive cache (F_FULLFSYNC)")
