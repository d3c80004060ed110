"""The runtime's per-organization state and its records.

Guarantees:
- :class:`RWGate` lets many batches apply at once and gives a snapshot (exclusive) the whole
  organization; a waiting snapshot blocks new batches, so a busy organization still gets saved.
- :class:`OrgState` holds what the engine was built from (definition texts, the WAL sequence
  number each filter was added at, the backfills applied): :meth:`OrgState.meta` is written into
  every snapshot, so a restart knows what changed while it was down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import eventtally

log = logging.getLogger("eventtally.server")


Progress = Callable[[dict[str, Any]], None]


class RWGate:
    """Shared/exclusive gate: many ingests apply at once; a snapshot waits for them and blocks
    new ones while it copies state.  Writers are preferred so a busy org still gets saved."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class OrgState:
    """An organization's engine and what it was built from."""

    org_id: str
    engine: eventtally.Engine
    #: ingest id / filter id → the definition text (sorted JSON) applied to the engine
    ingests: dict[str, str] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)
    #: filter id → WAL sequence number it was added at (it saw every record numbered above)
    filter_since: dict[str, int] = field(default_factory=dict)
    #: backfills applied (recorded in the snapshot)
    backfills: list[dict[str, Any]] = field(default_factory=list)
    gate: RWGate = field(default_factory=RWGate)
    dirty: bool = False
    save_lock: threading.Lock = field(default_factory=threading.Lock)
    #: WAL sequence number and wall time of the newest snapshot written or loaded
    snapshot_seq: int | None = None
    snapshot_time: float | None = None
    #: definitions changed but their snapshot failed: ingest is refused (503) until one lands
    needs_snapshot: bool = False

    def meta(self) -> dict[str, Any]:
        return {
            "org": self.org_id,
            "ingests": self.ingests,
            "filters": self.filters,
            "filterSince": self.filter_since,
            "backfills": self.backfills,
            "savedAt": time.time(),
        }


@dataclass
class BackfillResult:
    """What a backfill did."""

    org_id: str
    filter_id: str
    kind: str
    records: int = 0
    events: int = 0
    accepted: int = 0
    failed: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    oldest_retained_ms: int | None = None
    """``received_at`` of the oldest log record still on disk (WAL backfills)."""
    since_seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization": self.org_id,
            "filter": self.filter_id,
            "kind": self.kind,
            "records": self.records,
            "events": self.events,
            "accepted": self.accepted,
            "failed": self.failed,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "oldestRetainedMs": self.oldest_retained_ms,
            "sinceSeq": self.since_seq,
        }


def _text(defn: dict[str, Any]) -> str:
    return json.dumps(defn, sort_keys=True)
