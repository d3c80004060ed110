"""Crash recovery: newest valid snapshot per organization, then the WAL after it
(docs/durability.md).

What this module guarantees:

- Every organization with a snapshot starts from its newest snapshot that verifies *and* that
  ``make_engine`` accepts; a corrupt file or one the engine rejects (``SnapshotError``) falls back
  to the next older one, with a WARNING. Organizations without a snapshot start empty.
- Exactly once: a WAL record is applied to its organization's engine if and only if its sequence
  number is above that organization's snapshot ``wal_seq``, in log order. Records a snapshot
  covers are skipped from their headers alone (their payloads are not read).
- The ingest time is replayed from the record (``received_ms=received_at_ms``), so events
  timestamped at ingest time land in the buckets they landed in before the crash.
- A record whose replay raises :class:`eventtally.EventtallyError` (it was a 4xx when first
  sent, or the definitions changed since) is counted and logged, never fatal. A damaged record
  in the middle of the log (:class:`~eventtally.durability.wal.WalCorruptionError`) is fatal:
  recovery refuses to build a state that silently misses acknowledged batches.
- Afterwards the log's next sequence number is above every snapshot's, and the report says what
  happened: records and events replayed, time and rate, torn tail cut, snapshot fallbacks, and
  WAL gaps (records deleted although an organization's chosen snapshot still needed them).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import eventtally

from .snapshots import SnapshotFiles
from .wal import TornTail, WalRecord, WriteAheadLog

__all__ = ["RecoveryReport", "ingest_record", "recover"]

log = logging.getLogger("eventtally.recovery")

E = TypeVar("E")


@dataclass
class RecoveryReport(Generic[E]):
    """What :func:`recover` did; ``engines`` holds the recovered engine of each organization."""

    engines: dict[str, E] = field(default_factory=dict)
    snapshot_seqs: dict[str, int] = field(default_factory=dict)
    """WAL sequence number of the snapshot each organization started from (absent: none)."""
    snapshots_rejected: int = 0
    """Snapshot files skipped because they were corrupt or the engine refused them."""
    records_replayed: int = 0
    records_skipped: int = 0
    """Records a snapshot already covered (not read)."""
    records_failed: int = 0
    """Records whose replay raised an ``EventtallyError`` (logged, not applied)."""
    records_orphaned: int = 0
    """Records of organizations ``make_engine`` no longer knows."""
    events: int = 0
    seconds: float = 0.0
    last_seq: int = 0
    torn_tail: TornTail | None = None
    gaps: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Organization -> (first, last) WAL sequence numbers it needed that are no longer on disk."""

    @property
    def torn_tail_cut(self) -> bool:
        """Whether opening the WAL cut a torn last record."""
        return self.torn_tail is not None

    @property
    def records_per_second(self) -> float:
        """Replayed records per second of recovery."""
        return self.records_replayed / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_second(self) -> float:
        """Replayed events per second of recovery."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One log line."""
        torn = (
            f"torn tail of {self.torn_tail.bytes_cut} B cut in {self.torn_tail.segment.name}"
            if self.torn_tail
            else "no torn tail"
        )
        return (
            f"recovered {len(self.engines)} org(s) from {len(self.snapshot_seqs)} snapshot(s) "
            f"({self.snapshots_rejected} rejected); replayed {self.records_replayed} record(s), "
            f"{self.events} event(s) in {self.seconds:.3f} s ({self.events_per_second:,.0f} "
            f"events/s); skipped {self.records_skipped}, failed {self.records_failed}, "
            f"orphaned {self.records_orphaned}; {torn}; WAL at seq {self.last_seq}"
        )


def ingest_record(engine: eventtally.Engine, record: WalRecord) -> eventtally.IngestStats:
    """Replay one record into an engine exactly as it was first ingested."""
    return engine.ingest(
        record.payload, ingest_id=record.ingest_id, received_ms=record.received_at_ms
    )


def _events(result: object) -> int:
    if isinstance(result, int):
        return result
    events = getattr(result, "events", 0)
    return events if isinstance(events, int) else 0


def recover(
    snapshots: SnapshotFiles,
    wal: WriteAheadLog,
    make_engine: Callable[[str, bytes | None], E | None],
    apply_record: Callable[[E, WalRecord], object] | None = None,
    *,
    org_ids: Iterable[str] = (),
    workers: int | None = None,
) -> RecoveryReport[E]:
    """Rebuild every organization's engine from ``snapshots`` and ``wal``.

    ``make_engine(org_id, snapshot_bytes)`` returns an engine restored from the bytes (raising
    ``eventtally.SnapshotError`` rejects them and the next older snapshot is tried), a fresh
    engine when the bytes are ``None``, or ``None`` for an organization that no longer exists
    (its records are skipped and counted as orphaned).
    ``org_ids`` are organizations to build even when they have neither snapshot nor record.
    ``apply_record(engine, record)`` replays one record and returns its ``IngestStats`` (or an
    event count); by default the engines are ``eventtally.Engine`` objects and records are
    parsed on ``workers`` threads (default: the CPU count) with ``Engine.prepare`` while the
    calling thread applies them in log order, as :func:`ingest_record` would one by one.
    """
    t0 = time.perf_counter()
    report: RecoveryReport[E] = RecoveryReport(torn_tail=wal.torn_tail)
    orphans: set[str] = set()
    unusable: set[str] = set()  # orgs whose snapshot files all failed: they start empty

    def load(org: str) -> None:
        for data, seq in snapshots.iter_valid(org):
            try:
                engine = make_engine(org, data)
            except eventtally.EventtallyError as exc:
                report.snapshots_rejected += 1
                log.warning("snapshot of org %r at seq %d rejected (%s); trying an older one",
                            org, seq, exc)  # fmt: skip
                continue
            if engine is None:
                orphans.add(org)
                return
            report.engines[org] = engine
            report.snapshot_seqs[org] = seq
            return
        if snapshots.files(org):
            unusable.add(org)
            log.error("org %r: no usable snapshot; rebuilding it from the WAL alone", org)
        engine = make_engine(org, None)
        if engine is None:
            orphans.add(org)
        else:
            report.engines[org] = engine

    for org in sorted(snapshots.orgs() | set(org_ids)):
        load(org)

    first = wal.first_seq
    needed = {**dict.fromkeys(unusable & set(report.engines), 0), **report.snapshot_seqs}
    for org, seq in sorted(needed.items()):
        if seq + 1 < first:
            report.gaps[org] = (seq + 1, first - 1)
            log.error(
                "org %r: its snapshot covers the WAL up to seq %d but the log now starts at %d; "
                "batches logged in between are lost for it",
                org, seq, first,
            )  # fmt: skip
    wal.ensure_next_seq(max(report.snapshot_seqs.values(), default=0) + 1)

    def wanted(seq: int, org: str) -> bool:
        if org not in report.engines and org not in orphans:
            load(org)
        if org in orphans:
            report.records_orphaned += 1
            return False
        if seq <= report.snapshot_seqs.get(org, 0):
            report.records_skipped += 1
            return False
        return True

    def failed(record: WalRecord, exc: Exception) -> None:
        report.records_failed += 1
        log.warning(
            "replay of WAL record %d (org %r, ingest %r) failed and was skipped: %s",
            record.seq, record.org_id, record.ingest_id, exc,
        )  # fmt: skip

    records = wal.replay(0, where=wanted)
    if apply_record is not None:
        for record in records:
            try:
                result = apply_record(report.engines[record.org_id], record)
            except eventtally.EventtallyError as exc:
                failed(record, exc)
                continue
            report.records_replayed += 1
            report.events += _events(result)
    else:
        _pipelined(records, report, failed, workers or os.cpu_count() or 1)

    report.seconds = time.perf_counter() - t0
    report.last_seq = wal.last_seq
    log.info("%s", report.summary())
    return report


def _pipelined(
    records: Iterable[WalRecord],
    report: RecoveryReport[Any],
    failed: Callable[[WalRecord, Exception], None],
    workers: int,
) -> None:
    """``Engine.prepare`` on worker threads (it releases the GIL), ``apply`` here in log order.

    The read-ahead is bounded (``4 * workers`` records), so memory stays a few batches deep.
    """

    def prepare(record: WalRecord) -> eventtally.PreparedBatch:
        engine: eventtally.Engine = report.engines[record.org_id]
        return engine.prepare(
            record.payload, ingest_id=record.ingest_id, received_ms=record.received_at_ms
        )

    def finish(record: WalRecord, future: Future[eventtally.PreparedBatch]) -> None:
        try:
            prepared = future.result()
            stats = report.engines[record.org_id].apply(prepared)
        except eventtally.EventtallyError as exc:
            failed(record, exc)
            return
        report.records_replayed += 1
        report.events += stats.events

    if workers <= 1:
        for record in records:
            future: Future[eventtally.PreparedBatch] = Future()
            try:
                future.set_result(prepare(record))
            except eventtally.EventtallyError as exc:
                future.set_exception(exc)
            finish(record, future)
        return
    window: deque[tuple[WalRecord, Future[eventtally.PreparedBatch]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="eventtally-replay") as pool:
        for record in records:
            window.append((record, pool.submit(prepare, record)))
            if len(window) >= 4 * workers:
                finish(*window.popleft())
        while window:
            finish(*window.popleft())
