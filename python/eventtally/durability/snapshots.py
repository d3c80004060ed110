"""Per-organization engine snapshots tagged with the WAL position they cover (docs/durability.md).

What this module guarantees:

- A snapshot file ``snap-<org>-<wal seq, 20 digits>.bin`` appears complete or not at all: it is
  written to a temporary file, fsynced, renamed into place, and the directory is fsynced.
  ``<org>`` is the organization id percent-encoded (``urllib.parse.quote(org, safe="")``).
- Every file carries a header (magic, format version, WAL sequence number, creation time, the
  organization id) and ends with a CRC-32 of all the bytes before it, so a torn, truncated or
  bit-flipped file is recognised; the engine's own snapshot bytes (``Engine.to_bytes``, itself
  versioned and checksummed) are stored inside unchanged.
- :meth:`SnapshotFiles.latest_valid` returns the newest snapshot of an organization that
  verifies, falling back to older ones with a WARNING on ``eventtally.snapshots``; corrupt files
  are left in place for inspection, never deleted by the fallback.
- After each write only the ``keep`` newest snapshots (by WAL sequence number) of that
  organization remain. :meth:`SnapshotFiles.safe_wal_seq` says how much of the WAL every kept
  snapshot still needs, so a fallback never lands on a snapshot whose WAL tail was deleted.
- Thread-safe; writes of different organizations may run concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from .files import atomic_write, make_private_dirs

__all__ = ["SNAPSHOT_VERSION", "SnapshotFile", "SnapshotFiles"]

log = logging.getLogger("eventtally.snapshots")

SNAPSHOT_MAGIC = b"ETSNAPv\x01"
SNAPSHOT_VERSION = 1
#: magic, version, org id length, reserved (0), wal seq, created (Unix ms), engine bytes length.
_HEAD = struct.Struct("<8sIHHQqQ")
_CRC = struct.Struct("<I")
_NAME_RE = re.compile(r"^snap-(.+)-(\d{20})\.bin$")
_TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One snapshot file as listed (not yet verified)."""

    org_id: str
    wal_seq: int
    path: Path


class _Invalid(Exception):
    """Internal: a snapshot file does not verify (the message says why)."""


def _decode(data: bytes, org_id: str, wal_seq: int) -> bytes:
    """The engine bytes of a snapshot file, or :class:`_Invalid`."""
    if len(data) < _HEAD.size + _CRC.size:
        raise _Invalid(f"too short ({len(data)} bytes)")
    magic, version, org_len, _reserved, seq, _created, length = _HEAD.unpack_from(data, 0)
    if magic != SNAPSHOT_MAGIC:
        raise _Invalid("bad magic")
    if version != SNAPSHOT_VERSION:
        raise _Invalid(f"unknown format version {version}")
    if _HEAD.size + org_len + length + _CRC.size != len(data):
        raise _Invalid("length does not match the file size (truncated?)")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(memoryview(data)[: len(data) - _CRC.size]) != crc:
        raise _Invalid("crc mismatch")
    stored_org = data[_HEAD.size : _HEAD.size + org_len].decode("utf-8", "replace")
    if stored_org != org_id or seq != wal_seq:
        raise _Invalid(f"header says org {stored_org!r} seq {seq}, the name says otherwise")
    start = _HEAD.size + org_len
    return data[start : start + length]


class SnapshotFiles:
    """Snapshot files of every organization in one directory, ``keep`` newest per organization."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep
        make_private_dirs(self.directory)
        self._lock = threading.Lock()
        self._org_locks: dict[str, threading.Lock] = {}
        # Temporary files of writes interrupted by a crash are garbage.
        for name in os.listdir(self.directory):
            if name.startswith(".snap-") and name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()

    def _org_lock(self, org_id: str) -> threading.Lock:
        with self._lock:
            return self._org_locks.setdefault(org_id, threading.Lock())

    def path_for(self, org_id: str, wal_seq: int) -> Path:
        """Where the snapshot of ``org_id`` at ``wal_seq`` lives."""
        return self.directory / f"snap-{quote(org_id, safe='')}-{wal_seq:020d}.bin"

    def write(
        self, org_id: str, engine_bytes: bytes | bytearray | memoryview, wal_seq: int
    ) -> Path:
        """Write a snapshot of ``org_id`` covering WAL records up to ``wal_seq`` (inclusive),
        atomically and durably, then prune to the ``keep`` newest. Returns its path.

        ``wal_seq`` must be a cut: the engine state holds exactly the organization's records with
        ``seq <= wal_seq`` (take it under the ingest gate, e.g. ``wal.next_seq - 1``).
        """
        if not 0 <= wal_seq < 2**64:
            raise ValueError("wal_seq must be a u64")
        org = org_id.encode()
        if len(org) > 0xFFFF:
            raise ValueError("org_id must be at most 65535 UTF-8 bytes")
        final = self.path_for(org_id, wal_seq)
        head = _HEAD.pack(
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            len(org),
            0,
            wal_seq,
            round(time.time() * 1000),
            len(engine_bytes),
        )
        crc = zlib.crc32(engine_bytes, zlib.crc32(org, zlib.crc32(head)))
        tmp = self.directory / f".{final.name}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}"
        with self._org_lock(org_id):
            atomic_write(final, [head, org, engine_bytes, _CRC.pack(crc)], tmp=tmp)
            self._prune(org_id)
        return final

    def files(self, org_id: str | None = None) -> list[SnapshotFile]:
        """Snapshot files (of ``org_id`` or of all), oldest first per organization."""
        out = []
        for name in os.listdir(self.directory):
            m = _NAME_RE.match(name)
            if m is None:
                continue
            org = unquote(m.group(1))
            if org_id is not None and org != org_id:
                continue
            out.append(SnapshotFile(org, int(m.group(2)), self.directory / name))
        out.sort(key=lambda s: (s.org_id, s.wal_seq))
        return out

    def orgs(self) -> set[str]:
        """Organizations that have at least one snapshot file."""
        return {s.org_id for s in self.files()}

    def _prune(self, org_id: str) -> None:
        files = self.files(org_id)
        for old in files[: max(0, len(files) - self.keep)]:
            with contextlib.suppress(FileNotFoundError):
                old.path.unlink()

    def read(self, snapshot: SnapshotFile) -> bytes:
        """The engine bytes of one file; ``ValueError`` saying why when it does not verify."""
        try:
            return _decode(snapshot.path.read_bytes(), snapshot.org_id, snapshot.wal_seq)
        except _Invalid as exc:
            raise ValueError(f"snapshot {snapshot.path} is invalid: {exc}") from None

    def iter_valid(self, org_id: str) -> Iterator[tuple[bytes, int]]:
        """``(engine_bytes, wal_seq)`` of each snapshot of ``org_id`` that verifies, newest
        first; each one skipped is logged as a WARNING. Recovery walks on when the engine
        rejects the bytes too (``SnapshotError``)."""
        for snap in reversed(self.files(org_id)):
            try:
                data = snap.path.read_bytes()
                yield _decode(data, org_id, snap.wal_seq), snap.wal_seq
            except (OSError, _Invalid) as exc:
                log.warning(
                    "snapshot %s of org %r is unusable (%s); falling back to an older one",
                    snap.path, org_id, exc,
                )  # fmt: skip

    def latest_valid(self, org_id: str) -> tuple[bytes, int] | None:
        """``(engine_bytes, wal_seq)`` of the newest snapshot of ``org_id`` that verifies, or
        ``None`` when it has none."""
        return next(self.iter_valid(org_id), None)

    def safe_wal_seq(self, org_ids: Iterable[str]) -> int:
        """The highest WAL sequence number no kept snapshot of these organizations needs beyond:
        the oldest kept snapshot's ``wal_seq``, minimum over the organizations (0 when one has
        no snapshot). ``wal.truncate_before(store.safe_wal_seq(orgs) + 1)`` keeps every fallback
        recoverable."""
        by_org: dict[str, int] = {}
        for snap in self.files():
            by_org.setdefault(snap.org_id, snap.wal_seq)  # sorted: the first is the oldest
        return min((by_org.get(org, 0) for org in org_ids), default=0)
