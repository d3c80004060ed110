"""Ingest health and server information for the Read-key endpoints
``GET /api/v1/ingest-health`` and ``GET /api/v1/server-info`` (the dashboard at ``/ui/`` reads
them; see ``docs/server.md``, "Dashboard and ingest health").

Guarantees:
- Per ingest (keyed by organization and ingest id) this process counts events received,
  accepted, dropped by reason and falling back to the ingest time, and batches refused by HTTP
  status, as totals since the process started and in one-minute buckets of the server clock for
  the last :data:`SERIES_MINUTES` minutes.  Memory is bounded: at most that many buckets and
  :data:`RING_SIZE` refused batches per ingest, each refused batch keeping its status, message
  (cut at :data:`MESSAGE_CHARS` characters) and only the first :data:`PREFIX_BYTES` bytes of its
  body.  The key that sent a batch is never kept, nor any full body.
- Recording is O(1) per batch under one short lock, so the ingest path does not slow down; the
  reading side copies under that lock and formats outside it.
- A batch refused before its ingest is known to belong to the key's organization (401, 403,
  404, a 503 for overload or recovery) is not attributed to any ingest, so one organization
  never sees another's traffic.  Answers name only the key's organization's ingests.
- Counters live in memory: a restart starts them at zero (``startedAt`` says since when).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import eventtally

from .errors import HealthQueryError

if TYPE_CHECKING:
    from .metadata import IngestRecord
    from .runtime import OrgState, Runtime

__all__ = [
    "MESSAGE_CHARS",
    "PREFIX_BYTES",
    "RING_SIZE",
    "ROUTES",
    "SERIES_MINUTES",
    "IngestHealth",
    "QueryError",
    "ingest_health",
    "server_info",
]

#: One-minute buckets kept per ingest (24 hours).
SERIES_MINUTES = 1440
#: Refused batches kept per ingest (the newest ones).
RING_SIZE = 50
#: Bytes of a refused body kept (after gunzip when the body could be decoded).
PREFIX_BYTES = 256
#: Characters of a refusal message kept.
MESSAGE_CHARS = 500

#: environ keys the WSGI app sets while it handles an ingest request (see app.py).
ENV_INGEST = "eventtally.health.ingest"
ENV_BODY = "eventtally.health.body"

#: The routes this module answers (method per route, as in ``app._API_ROUTES``).
ROUTES: dict[str, str] = {"ingest-health": "GET", "server-info": "GET"}

#: How long a measured data-directory size is reused: walking the tree on every poll of every
#: open dashboard would cost more than the answer is worth.
DIR_SIZE_TTL = 10.0


#: A query parameter out of range (the app answers 400 with its message).
QueryError = HealthQueryError


def _iso(seconds: float) -> str:
    ms = math.floor(seconds * 1000)
    whole, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{frac:03d}Z"


@dataclass
class _Minute:
    minute: int
    received: int = 0
    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dt": _iso(self.minute * 60.0),
            "received": self.received,
            "accepted": self.accepted,
            "dropped": dict(self.dropped),
            "rejected": dict(self.rejected),
        }


@dataclass
class _Refused:
    at: float
    status: int
    message: str
    body_bytes: int | None
    prefix: bytes
    encoding: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "status": self.status,
            "message": self.message,
            "bodyBytes": self.body_bytes,
            "bodyPrefix": self.prefix.decode("utf-8", "backslashreplace"),
            "contentEncoding": self.encoding,
        }


@dataclass
class _Ingest:
    batches: int = 0
    received: int = 0
    accepted: int = 0
    timestamp_fallback: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    last_batch_at: float | None = None
    last_event_at: float | None = None
    minutes: deque[_Minute] = field(default_factory=lambda: deque(maxlen=SERIES_MINUTES))
    refused: deque[_Refused] = field(default_factory=lambda: deque(maxlen=RING_SIZE))

    def bucket(self, now: float) -> _Minute:
        minute = math.floor(now / 60.0)
        if self.minutes and self.minutes[-1].minute >= minute:
            # A clock stepping back lands in the newest bucket rather than reordering them.
            return self.minutes[-1]
        b = _Minute(minute)
        self.minutes.append(b)
        return b


class IngestHealth:
    """The counters and rings of every ingest this process served."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._lock = threading.Lock()
        self._ingests: dict[tuple[str, str], _Ingest] = {}
        self._dir_size: tuple[float, int] | None = None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_mono

    def _get(self, org_id: str, ingest_id: str) -> _Ingest:
        key = (org_id, ingest_id)
        found = self._ingests.get(key)
        if found is None:
            found = self._ingests[key] = _Ingest()
        return found

    def record_batch(
        self,
        org_id: str,
        ingest_id: str,
        events: int,
        accepted: int,
        dropped: dict[str, int],
        timestamp_fallback: int = 0,
    ) -> None:
        """Count one batch answered 200."""
        now = self.clock()
        with self._lock:
            ing = self._get(org_id, ingest_id)
            b = ing.bucket(now)
            ing.batches += 1
            ing.received += events
            b.received += events
            ing.accepted += accepted
            b.accepted += accepted
            ing.timestamp_fallback += timestamp_fallback
            for reason, n in dropped.items():
                ing.dropped[reason] = ing.dropped.get(reason, 0) + n
                b.dropped[reason] = b.dropped.get(reason, 0) + n
            ing.last_batch_at = now
            if accepted:
                ing.last_event_at = now

    def record_refused(
        self,
        org_id: str,
        ingest_id: str,
        status: int,
        message: str,
        body: bytes | None,
        *,
        body_bytes: int | None = None,
        encoding: str = "",
    ) -> None:
        """Count one batch refused with ``status``; keep its message and first bytes."""
        now = self.clock()
        entry = _Refused(
            at=now,
            status=status,
            message=message[:MESSAGE_CHARS],
            body_bytes=len(body) if body is not None else body_bytes,
            prefix=bytes(body[:PREFIX_BYTES]) if body is not None else b"",
            encoding=encoding,
        )
        code = str(status)
        with self._lock:
            ing = self._get(org_id, ingest_id)
            b = ing.bucket(now)
            ing.rejected[code] = ing.rejected.get(code, 0) + 1
            b.rejected[code] = b.rejected.get(code, 0) + 1
            ing.last_batch_at = now
            ing.refused.append(entry)

    def refused_from_environ(self, environ: dict[str, Any], status: int, message: str) -> None:
        """Record a refusal of the ingest request ``environ`` if the app resolved its ingest
        in the key's organization (``ENV_INGEST`` set); otherwise do nothing."""
        target = environ.get(ENV_INGEST)
        if target is None:
            return
        org_id, ingest_id = target
        body = environ.get(ENV_BODY)
        declared = (environ.get("CONTENT_LENGTH") or "").strip()
        self.record_refused(
            org_id,
            ingest_id,
            status,
            message,
            body if isinstance(body, bytes) else None,
            body_bytes=int(declared) if declared.isdigit() else None,
            encoding=(environ.get("HTTP_CONTENT_ENCODING") or "").strip().lower(),
        )

    def snapshot(
        self, org_id: str, ingest_ids: list[str], minutes: int, rejected: int
    ) -> dict[str, dict[str, Any]]:
        """Copies of the named ingests' counters (``minutes`` newest buckets, ``rejected``
        newest refused batches, newest first)."""
        now = self.clock()
        first_minute = math.floor(now / 60.0) - minutes + 1
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for iid in ingest_ids:
                ing = self._ingests.get((org_id, iid))
                if ing is None:
                    ing = _Ingest()
                series = [m for m in ing.minutes if m.minute >= first_minute]
                refused = list(ing.refused)[::-1][:rejected]
                out[iid] = {
                    "totals": {
                        "batches": ing.batches,
                        "received": ing.received,
                        "accepted": ing.accepted,
                        "dropped": dict(ing.dropped),
                        "timestampFallback": ing.timestamp_fallback,
                        "rejected": dict(ing.rejected),
                    },
                    "lastBatchAt": ing.last_batch_at,
                    "lastEventAt": ing.last_event_at,
                    "series": [
                        _Minute(m.minute, m.received, m.accepted, dict(m.dropped), dict(m.rejected))
                        for m in series
                    ],
                    "rejectedBatches": refused,
                }
        for doc in out.values():
            last = doc["lastEventAt"]
            doc["lagSeconds"] = None if last is None else round(max(0.0, now - last), 3)
            doc["lastEventAt"] = None if last is None else _iso(last)
            batch = doc["lastBatchAt"]
            doc["lastBatchAt"] = None if batch is None else _iso(batch)
            doc["series"] = [m.to_dict() for m in doc["series"]]
            doc["rejectedBatches"] = [r.to_dict() for r in doc["rejectedBatches"]]
        return out

    def data_dir_bytes(self, root: Path) -> int:
        """Bytes of the files under ``root`` (measured at most every ``DIR_SIZE_TTL`` s)."""
        cached = self._dir_size
        if cached is not None and time.monotonic() - cached[0] < DIR_SIZE_TTL:
            return cached[1]
        total = _tree_bytes(root)
        self._dir_size = (time.monotonic(), total)
        return total


def _tree_bytes(root: Path) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # a file deleted while walking (WAL truncation) is skipped
        except OSError:
            continue
    return total


def _int_param(params: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, [""])[-1].strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name}: expected an integer from {lo} to {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise QueryError(f"{name}: expected an integer from {lo} to {hi}, got {value}")
    return value


def ingest_health(
    health: IngestHealth, ingests: list[IngestRecord], org_id: str, query_string: str
) -> dict[str, Any]:
    """The ``GET /api/v1/ingest-health`` answer for ``org_id``'s ``ingests`` (metadata
    records with ``id``, ``name``, ``schema``, ``enabled``).  Query parameters: ``minutes``
    (1–1440, default 60) and ``rejected`` (0–50, default 20)."""
    params = parse_qs(query_string)
    minutes = _int_param(params, "minutes", 60, 1, SERIES_MINUTES)
    rejected = _int_param(params, "rejected", 20, 0, RING_SIZE)
    ordered = sorted(ingests, key=lambda r: r.id)
    counts = health.snapshot(org_id, [r.id for r in ordered], minutes, rejected)
    return {
        "now": _iso(health.clock()),
        "since": _iso(health.started_at),
        "minutes": minutes,
        "ingests": [
            {
                "id": r.id,
                "name": r.name,
                "schema": r.schema,
                "enabled": r.enabled,
                **counts[r.id],
            }
            for r in ordered
        ],
    }


def _version() -> str:
    return eventtally.__version__


def server_info(health: IngestHealth, runtime: Runtime, org_id: str) -> dict[str, Any]:
    """The ``GET /api/v1/server-info`` answer: version, clock, uptime, data-directory size,
    write-ahead log and the key's organization's snapshot."""
    now = time.time()
    storage = runtime.storage
    wal_doc: dict[str, Any] = {"enabled": False}
    wal = storage.wal
    if wal is not None:
        stats = wal.stats()
        segments = wal.segments()
        ages: list[float | None] = []
        for seg in (segments[0], segments[-1]) if segments else ():
            try:
                ages.append(round(max(0.0, now - seg.path.stat().st_mtime), 3))
            except OSError:
                ages.append(None)
        wal_doc = {
            "enabled": True,
            "segments": len(segments),
            "bytes": sum(s.size for s in segments),
            "lastSeq": stats.last_seq,
            "syncedSeq": stats.synced_seq,
            # The oldest segment was last written when it was rotated out, so its age is how
            # far back (at least) the log reaches; the newest one's age is time since a write.
            "oldestSegmentAgeSeconds": ages[0] if ages else None,
            "lastWriteAgeSeconds": ages[-1] if ages else None,
        }
    snap_doc: dict[str, Any] = {"ageSeconds": None, "walSeq": None}
    try:
        st: OrgState | None = runtime.org(org_id)
    except KeyError:
        st = None
    if st is not None:
        if st.snapshot_time is not None:
            snap_doc["ageSeconds"] = round(max(0.0, now - st.snapshot_time), 3)
        snap_doc["walSeq"] = st.snapshot_seq
    return {
        "version": _version(),
        "now": _iso(health.clock()),
        "startedAt": _iso(health.started_at),
        "uptimeSeconds": round(health.uptime, 3),
        "status": runtime.status,
        "dataDirBytes": health.data_dir_bytes(Path(runtime.store.data_dir)),
        "wal": wal_doc,
        "snapshot": snap_doc,
        "organization": org_id,
    }
