"""The server's durable storage in the data directory: lock, write-ahead log, snapshots, dedup.

Layout (``<data_dir>/``):

- ``LOCK``: held (``flock``) by the one process that owns the engines (a server, or an offline
  ``eventtally backfill``); it holds that process's pid. The metadata database beside it is
  shared: the management CLI writes it while a server runs.
- ``wal/``: :class:`~eventtally.durability.WriteAheadLog` segments (every accepted batch).
- ``snapshots/``: :class:`~eventtally.durability.SnapshotFiles` files, one organization's state
  per file, tagged with the WAL sequence number they cover.
- ``state/<org>.snapshot``: a symbolic link to the organization's newest snapshot (for operators
  and backup scripts; never read while snapshots exist). A regular file there is an interim
  server's snapshot, loaded once when the organization has no snapshot yet.

Guarantees:
- At most one process at a time opens the log and snapshots of a data directory
  (:class:`DataDirLock`); a second one waits up to ``lock_timeout_s`` and then fails, naming the
  holder's pid.
- A snapshot's payload is ``MAGIC ‖ JSON metadata line ‖ Engine.to_bytes()``: the definitions the
  engine was built from (so a restart knows which filters changed while it was down), the WAL
  sequence number each filter was added at (backfill uses it to never double-count), and the
  backfills applied. A payload that does not decode raises ``SnapshotError``, so recovery falls
  back to the next older snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import eventtally
from eventtally.durability import MessageIdDeduplicator, SnapshotFiles, WriteAheadLog
from eventtally.durability.files import make_private_dirs, open_private

from .config import DurabilityConfig
from .errors import DataDirBusyError

__all__ = [
    "STATE_MAGIC",
    "DataDirBusyError",
    "DataDirLock",
    "Storage",
    "decode_state",
    "encode_state",
]

log = logging.getLogger("eventtally.server")

STATE_MAGIC = b"eventtally-org-state 1\n"
#: The interim server's snapshot format (``state/<org>.snapshot`` as a regular file).
LEGACY_MAGIC = b"eventtally-server-snapshot 1\n"


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/LOCK``, released on :meth:`release` or exit."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "LOCK"
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def holder(self) -> str:
        """The pid written by the holder (may be stale or empty)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def try_acquire(self) -> bool:
        if self._fd >= 0:
            return True
        make_private_dirs(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self, timeout: float = 0.0, stop: threading.Event | None = None) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; :class:`DataDirBusyError` if not."""
        deadline = time.monotonic() + timeout
        warned = False
        while not self.try_acquire():
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise DataDirBusyError(self.path, self.holder())
            if not warned:
                log.warning("waiting for %s (held by pid %s)", self.path, self.holder() or "?")
                warned = True
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock


def encode_state(meta: dict[str, Any], engine_bytes: bytes) -> bytes:
    """A snapshot payload: magic, one line of JSON metadata, the engine's own snapshot."""
    line = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return b"".join((STATE_MAGIC, line, b"\n", engine_bytes))


def decode_state(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(metadata, engine bytes)``; ``SnapshotError`` when the payload is not one."""
    view = bytes(data[: len(STATE_MAGIC)])
    if view != STATE_MAGIC:
        raise eventtally.SnapshotError("not an eventtally organization state", reason="bad magic")
    end = data.find(b"\n", len(STATE_MAGIC))
    if end < 0:
        raise eventtally.SnapshotError("truncated state metadata", reason="truncated")
    try:
        meta = json.loads(data[len(STATE_MAGIC) : end])
    except ValueError as exc:
        raise eventtally.SnapshotError(f"bad state metadata: {exc}", reason="metadata") from exc
    if not isinstance(meta, dict):
        raise eventtally.SnapshotError("bad state metadata", reason="metadata")
    return meta, data[end + 1 :]


def decode_legacy(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The interim server's ``state/<org>.snapshot`` format; ``SnapshotError`` if not one."""
    if not data.startswith(LEGACY_MAGIC):
        raise eventtally.SnapshotError("not an interim server snapshot", reason="bad magic")
    end = data.find(b"\n", len(LEGACY_MAGIC))
    try:
        meta = json.loads(data[len(LEGACY_MAGIC) : end])
    except ValueError as exc:
        raise eventtally.SnapshotError(f"bad snapshot metadata: {exc}", reason="metadata") from exc
    return dict(meta), data[end + 1 :]


class Storage:
    """The WAL, the snapshot store and the deduplicator of one data directory."""

    def __init__(self, data_dir: Path, cfg: DurabilityConfig) -> None:
        self.data_dir = Path(data_dir)
        self.cfg = cfg
        self.lock = DataDirLock(self.data_dir)
        self.wal: WriteAheadLog | None = None
        self.snapshots: SnapshotFiles | None = None
        self.dedup: MessageIdDeduplicator | None = (
            MessageIdDeduplicator(window=cfg.dedup_window_s, max_ids=cfg.dedup_max_ids)
            if cfg.dedup
            else None
        )
        self.state_dir = self.data_dir / "state"

    def open(self, *, stop: threading.Event | None = None) -> None:
        """Lock the data directory, open the snapshot store and the log (cutting a torn tail).

        The log is opened even with ``wal = false``, so batches logged before the setting
        changed are recovered; the runtime closes it after the first snapshots.
        """
        self.lock.acquire(self.cfg.lock_timeout_s, stop)
        try:
            make_private_dirs(self.state_dir)
            self.snapshots = SnapshotFiles(
                self.data_dir / "snapshots", keep=self.cfg.snapshots_keep
            )
            self.wal = WriteAheadLog(
                self.data_dir / "wal",
                fsync=self.cfg.fsync,
                interval_ms=self.cfg.fsync_interval_ms,
                segment_bytes=self.cfg.segment_bytes,
                retain_bytes=self.cfg.wal_retention_bytes,
                retain_seconds=self.cfg.wal_retention_seconds,
                compress_level=self.cfg.wal_compress_level,
                repair=self.cfg.wal_repair,
                recycle_segments=self.cfg.wal_recycle_segments,
                preallocate=self.cfg.wal_preallocate,
            )
        except BaseException:
            self.lock.release()
            raise
        if self.wal.torn_tail is not None:
            t = self.wal.torn_tail
            log.warning(
                "WAL: torn tail cut: %d byte(s) at offset %d of %s (%s); that batch was never "
                "acknowledged",
                t.bytes_cut, t.offset, t.segment.name, t.reason,
            )  # fmt: skip

    def link_latest(self, org_id: str, path: Path) -> None:
        """Point ``state/<org>.snapshot`` at ``path`` (atomically; best effort)."""
        link = self.state_dir / f"{org_id}.snapshot"
        tmp = self.state_dir / f".{org_id}.snapshot.{os.getpid()}.{threading.get_ident()}.lnk"
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(os.path.relpath(path, self.state_dir), tmp)
            os.replace(tmp, link)
        except OSError as exc:
            log.debug("could not link %s to %s: %s", link, path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def read_legacy(self, org_id: str) -> bytes | None:
        """The interim server's snapshot of ``org_id`` (a regular file), if there is one."""
        path = self.state_dir / f"{org_id}.snapshot"
        if path.is_symlink() or not path.is_file():
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def close_wal(self) -> None:
        if self.wal is not None:
            wal, self.wal = self.wal, None
            wal.close()

    def close(self) -> None:
        """Close the log (fsyncing it) and release the data directory."""
        try:
            self.close_wal()
        finally:
            self.lock.release()
