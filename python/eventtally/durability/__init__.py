"""Durability for the eventtally server: write-ahead log, snapshots, recovery, deduplication.

What this package guarantees (each module states its own guarantees in detail):

- :mod:`~eventtally.durability.wal`: a batch appended to the :class:`WriteAheadLog` is durable
  per the fsync policy when ``append`` returns (``always`` by default, with group commit); records
  are framed, checksummed and numbered, torn tails are cut on open, damage elsewhere is an error.
- :mod:`~eventtally.durability.snapshots`: :class:`SnapshotFiles` writes per-organization engine
  snapshots atomically, tagged with the WAL position they cover, and falls back to older ones.
- :mod:`~eventtally.durability.recovery`: :func:`recover` = newest valid snapshot + the WAL after
  it, applied exactly once, with ``received_at`` preserved.
- :mod:`~eventtally.durability.files`: everything in the data directory is created ``0600``
  (files) / ``0700`` (directories), whatever the umask; new directories' parents are fsynced.
- :mod:`~eventtally.durability.dedup`: opt-in :class:`MessageIdDeduplicator` on ``messageId``
  in a bounded window.

The server drives them as ``docs/durability.md`` ("Integration") describes. Stdlib only.
"""

from eventtally.durability.dedup import DedupStats, DedupVerdict, MessageIdDeduplicator
from eventtally.durability.recovery import RecoveryReport, ingest_record, recover
from eventtally.durability.snapshots import SnapshotFile, SnapshotFiles
from eventtally.durability.wal import (
    FSYNC_BUCKETS,
    FsyncPolicy,
    TornTail,
    WalClosedError,
    WalCorruptionError,
    WalFailedError,
    WalRecord,
    WalSegment,
    WalStats,
    WriteAheadLog,
    from_ms,
    to_ms,
)

__all__ = [
    "FSYNC_BUCKETS",
    "DedupStats",
    "DedupVerdict",
    "FsyncPolicy",
    "MessageIdDeduplicator",
    "RecoveryReport",
    "SnapshotFile",
    "SnapshotFiles",
    "TornTail",
    "WalClosedError",
    "WalCorruptionError",
    "WalFailedError",
    "WalRecord",
    "WalSegment",
    "WalStats",
    "WriteAheadLog",
    "from_ms",
    "ingest_record",
    "recover",
    "to_ms",
]
