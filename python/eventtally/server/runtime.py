"""Organization engines, the durability seam, and snapshot persistence.

Guarantees:
- One :class:`eventtally.Engine` per organization holds all its ingests and filters, so every
  filter sees every event ingested into its organization and nothing from other organizations.
- The engines follow the metadata: :meth:`Runtime.sync` adds, replaces and removes ingests and
  filters to match the store.  A disabled filter is removed from the engine with its aggregates;
  a filter whose definition is unchanged keeps its aggregates across restarts.
- A batch is ingested as ``prepare`` → :meth:`Durability.log` → ``apply``.  ``prepare`` parses and
  evaluates without touching state; the durability hook (a write-ahead log, issue 5) sees the
  exact bytes and ingest time that replay needs; ``apply`` merges.  A batch refused by the hook
  is not applied.
- Snapshots: each organization whose aggregates changed is written every ``save_interval``
  seconds and at :meth:`Runtime.close`, atomically (temp file, fsync, rename), to
  ``<data_dir>/state/<org>.snapshot``, together with the definitions the engine was built from.
  A snapshot and its durability mark are taken under an exclusive per-organization gate, so the
  snapshot contains exactly the batches logged before the mark.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import eventtally

from .manage import PLACEHOLDER_INGEST
from .metadata import MetadataStore, Snapshot

__all__ = ["Durability", "LogRecord", "NullDurability", "OrgState", "RWGate", "Runtime"]

log = logging.getLogger("eventtally.server")

_MAGIC = b"eventtally-server-snapshot 1\n"


@dataclass(frozen=True)
class LogRecord:
    """One accepted batch as a write-ahead log must store it to replay it exactly."""

    org_id: str
    ingest_id: str
    received_at: float
    body: bytes


class Durability(Protocol):
    """The seam between ``Engine.prepare`` and ``Engine.apply`` (issue 5 plugs a WAL in here)."""

    def log(self, record: LogRecord) -> None:
        """Make ``record`` durable before it is applied.  Raising refuses the batch (HTTP 503)."""

    def mark(self, org_id: str) -> object:
        """A position in ``org_id``'s log; called under the exclusive gate just before a snapshot
        of the engine is taken, so the snapshot holds exactly the records logged before it."""

    def checkpoint(self, org_id: str, mark: object) -> None:
        """The snapshot taken at ``mark`` is on disk: records before ``mark`` may be dropped."""

    def replay(self, org_id: str) -> Iterable[LogRecord]:
        """Records logged after the last checkpoint, in order; applied after the snapshot loads."""

    def close(self) -> None:
        """Flush and release resources (at shutdown, after the final snapshot)."""


class NullDurability:
    """No log: batches since the last snapshot are lost on a crash (not on a graceful stop)."""

    def log(self, record: LogRecord) -> None:
        return None

    def mark(self, org_id: str) -> object:
        return None

    def checkpoint(self, org_id: str, mark: object) -> None:
        return None

    def replay(self, org_id: str) -> Iterable[LogRecord]:
        return ()

    def close(self) -> None:
        return None


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
    gate: RWGate = field(default_factory=RWGate)
    dirty: bool = False
    save_lock: threading.Lock = field(default_factory=threading.Lock)


def _text(defn: dict[str, Any]) -> str:
    return json.dumps(defn, sort_keys=True)


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Runtime:
    """All organizations' engines, kept in step with a :class:`MetadataStore`."""

    def __init__(
        self,
        store: MetadataStore,
        *,
        clock: Callable[[], float] | None = None,
        durability: Durability | None = None,
        save_interval: float = 10.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.clock: Callable[[], float] = clock or time.time
        self.durability: Durability = durability or NullDurability()
        self.save_interval = save_interval
        self.poll_interval = poll_interval
        self.state_dir = store.data_dir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._orgs: dict[str, OrgState] = {}
        self._sync_lock = threading.RLock()
        self._synced: Snapshot | None = None
        self._last_poll = 0.0
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sync()

    # ------------------------------------------------------------------ engines

    def _new_engine(self) -> eventtally.Engine:
        # The engine needs at least one ingest at all times, while an organization may have
        # none (yet), and redefining its only ingest means removing it first.  A placeholder
        # ingest makes both work; it is never reachable: URLs route through the metadata, and
        # its id cannot be a real ingest id (those start with a letter or digit).
        return eventtally.Engine([dict(PLACEHOLDER_INGEST)], [], clock=self.clock)

    def _snapshot_path(self, org_id: str) -> Path:
        return self.state_dir / f"{org_id}.snapshot"

    def _load(self, org_id: str) -> OrgState | None:
        path = self._snapshot_path(org_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("not an eventtally server snapshot")
            meta_end = data.index(b"\n", len(_MAGIC))
            meta = json.loads(data[len(_MAGIC) : meta_end])
            engine = eventtally.Engine.from_bytes(data[meta_end + 1 :], clock=self.clock)
        except (ValueError, eventtally.EventtallyError) as exc:
            bad = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, bad)
            log.error(
                "snapshot of %s unreadable (%s); moved to %s, starting empty", org_id, exc, bad
            )
            return None
        return OrgState(
            org_id, engine, ingests=dict(meta["ingests"]), filters=dict(meta["filters"])
        )

    def _replay(self, st: OrgState) -> None:
        n = 0
        for rec in self.durability.replay(st.org_id):
            try:
                st.engine.ingest(rec.body, ingest_id=rec.ingest_id, received_at=rec.received_at)
                n += 1
            except eventtally.EventtallyError as exc:
                log.error("replay of a batch for %s/%s failed: %s", st.org_id, rec.ingest_id, exc)
        if n:
            st.dirty = True
            log.info("replayed %d logged batches for %s", n, st.org_id)

    def _build(self, org_id: str, snap: Snapshot) -> OrgState:
        st = self._load(org_id)
        if st is None:
            st = OrgState(org_id, self._new_engine())
        self._sync_org(st, snap)
        self._replay(st)
        return st

    def _sync_org(self, st: OrgState, snap: Snapshot) -> None:
        engine = st.engine
        changed = False
        for rec in snap.org_ingests(st.org_id):
            text = _text(rec.definition)
            if st.ingests.get(rec.id) == text:
                continue
            try:
                if rec.id in st.ingests:
                    engine.remove_ingest(rec.id)
                engine.add_ingest(rec.definition)
                st.ingests[rec.id] = text
                changed = True
            except eventtally.EventtallyError as exc:
                log.error("ingest %s of %s could not be (re)defined: %s", rec.id, st.org_id, exc)
        wanted = {f.id: f for f in snap.filters.get(st.org_id, ()) if f.enabled}
        for fid in list(st.filters):
            frec = wanted.get(fid)
            if frec is None or _text(frec.definition) != st.filters[fid]:
                with contextlib.suppress(eventtally.NotFoundError):
                    engine.remove_filter(fid)
                del st.filters[fid]
                changed = True
        for fid, frec in wanted.items():
            if fid in st.filters:
                continue
            try:
                engine.add_filter(frec.definition)
                st.filters[fid] = _text(frec.definition)
                changed = True
            except eventtally.EventtallyError as exc:
                log.error("filter %s of %s could not be added: %s", fid, st.org_id, exc)
        if changed:
            st.dirty = True

    def sync(self) -> None:
        """Bring every organization's engine in line with the store's current snapshot."""
        with self._sync_lock:
            snap = self.store.snapshot
            if snap is self._synced:
                return
            orgs = dict(self._orgs)
            for org_id in snap.orgs:
                st = orgs.get(org_id)
                if st is None:
                    orgs[org_id] = self._build(org_id, snap)
                else:
                    self._sync_org(st, snap)
            self._orgs = orgs
            self._synced = snap

    def ensure_synced(self) -> None:
        """Cheap on the request path: only syncs when the snapshot object changed."""
        if self.store.snapshot is not self._synced:
            self.sync()

    def poll(self, min_interval: float | None = None) -> None:
        """Pick up changes other processes (the CLI) committed, at most every ``min_interval``."""
        interval = self.poll_interval if min_interval is None else min_interval
        now = time.monotonic()
        if now - self._last_poll < interval:
            return
        with self._poll_lock:
            if now - self._last_poll < interval:
                return
            self._last_poll = now
            self.store.reload_if_changed()
        self.ensure_synced()

    def org(self, org_id: str) -> OrgState:
        """The state of ``org_id``; raises ``KeyError`` for an unknown organization."""
        self.ensure_synced()
        return self._orgs[org_id]

    def engine(self, org_id: str) -> eventtally.Engine:
        return self.org(org_id).engine

    # ------------------------------------------------------------------ ingest

    def ingest(
        self, org_id: str, ingest_id: str, body: bytes, *, received_at: float | None = None
    ) -> Any:
        """Prepare, log, apply one batch; returns the engine's ``IngestStats``.

        Raises the engine's errors (``JsonError``, ``FormatError``, ...) from ``prepare``, before
        anything is logged or applied.
        """
        st = self.org(org_id)
        when = self.clock() if received_at is None else received_at
        prepared = st.engine.prepare(body, ingest_id=ingest_id, received_at=when)
        with st.gate.shared():
            self.durability.log(LogRecord(org_id, ingest_id, when, body))
            stats = st.engine.apply(prepared)
            st.dirty = True
        return stats

    # ------------------------------------------------------------------ persistence

    def save_org(self, st: OrgState, *, force: bool = False) -> bool:
        """Write ``st``'s snapshot if it changed (or ``force``); True if written."""
        with st.save_lock:
            if not (st.dirty or force):
                return False
            with st.gate.exclusive():
                st.dirty = False
                mark = self.durability.mark(st.org_id)
                data = st.engine.to_bytes()
                meta = {
                    "org": st.org_id,
                    "ingests": st.ingests,
                    "filters": st.filters,
                    "savedAt": time.time(),
                }
                meta_line = json.dumps(meta, sort_keys=True).encode()
            try:
                _atomic_write(self._snapshot_path(st.org_id), (_MAGIC, meta_line, b"\n", data))
            except BaseException:
                st.dirty = True
                raise
            self.durability.checkpoint(st.org_id, mark)
            return True

    def save_all(self, *, force: bool = False) -> int:
        """Save every changed organization; returns how many were written."""
        written = 0
        for st in list(self._orgs.values()):
            try:
                written += self.save_org(st, force=force)
            except Exception:
                log.exception("saving the snapshot of %s failed", st.org_id)
        return written

    def _maintain(self) -> None:
        tick = (
            min(self.poll_interval, self.save_interval)
            if self.save_interval
            else (self.poll_interval)
        )
        next_save = time.monotonic() + self.save_interval
        while not self._stop.wait(tick):
            try:
                self.poll()
            except Exception:
                log.exception("metadata refresh failed")
            if self.save_interval and time.monotonic() >= next_save:
                self.save_all()
                next_save = time.monotonic() + self.save_interval

    def start(self) -> None:
        """Start the background thread that polls metadata and saves snapshots."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._maintain, name="eventtally-maintenance", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the background thread, save every changed organization, close the hook."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.save_all()
        self.durability.close()
