"""Organization engines, write-ahead logging, snapshots, crash recovery and backfill.

Guarantees:
- One :class:`eventtally.Engine` per organization holds all its ingests and filters, so every
  filter sees every event ingested into its organization and nothing from other organizations.
- The engines follow the metadata: :meth:`Runtime.sync` adds, replaces and removes ingests and
  filters to match the store.  A disabled filter is removed with its aggregates; a filter whose
  definition changed starts empty; an unchanged filter keeps its aggregates across restarts.
- A batch is ingested as ``prepare`` → ``wal.append`` → ``apply`` under the organization's shared
  gate, so it is durable (per the fsync policy) before it is applied and before the caller
  answers 200.  A batch the log refuses (``OSError``) is not applied: the caller answers 503.
  The state-size limit is checked before the append, so a refused batch is never in the log.
- Each record carries the ingest time in ms; live ingest and replay hand the engine that ms
  (``received_ms``), so events timestamped at ingest time land in the same buckets after a crash.
- Snapshots are taken under the exclusive gate: a snapshot tagged ``wal_seq`` holds exactly the
  organization's records numbered ``<= wal_seq``, so replay never double-counts.  Definition
  changes are applied *and snapshotted* under that gate, so every record is replayed with the
  definitions it was first applied with.
- :meth:`Runtime.open` locks the data directory, loads each organization's newest valid snapshot
  (falling back to older ones), replays the log after it, cuts a torn tail (logged), and only
  then sets :attr:`Runtime.ready`.  :meth:`Runtime.close` fsyncs the log, snapshots every changed
  organization, deletes covered log segments (outside the retention) and releases the directory.
- :meth:`Runtime.write_refusal` says why ingest would answer 503 right now (``/readyz``).
- Backfill applies a filter to batches it never saw: log records numbered at most the sequence
  number the filter was added at (and in a time range), or archive files, through a temporary
  engine merged into the organization's engine, so other filters are untouched and nothing is
  counted twice.  Each backfill is recorded in the snapshot; an overlapping one is refused.
- A snapshot backfill merges an engine snapshot aggregated offline into an organization's live
  state: validated like any snapshot, refused unless its filter definitions equal the
  organization's, refused when the same bytes (SHA-256) were merged before, and durable (a new
  organization snapshot is written) before the call returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import eventtally
from eventtally.durability import RecoveryReport, WalRecord, recover, to_ms

from .config import DurabilityConfig
from .manage import PLACEHOLDER_INGEST
from .metadata import MetadataStore, Snapshot
from .metrics import Family, Registry, histogram_family
from .storage import Storage, decode_legacy, decode_state, encode_state

__all__ = [
    "BackfillError",
    "BackfillResult",
    "NotReadyError",
    "OrgState",
    "RWGate",
    "RepeatedBackfillError",
    "Runtime",
    "StateLimitError",
    "parse_time_ms",
]

log = logging.getLogger("eventtally.server")

Progress = Callable[[dict[str, Any]], None]


class NotReadyError(Exception):
    """The runtime is still recovering (or already closed): answer 503 with Retry-After."""


class StateLimitError(Exception):
    """The organization's aggregate state is over ``max_state_bytes_per_org``."""

    def __init__(self, org_id: str, used: int, limit: int) -> None:
        super().__init__(
            f"State size limit reached for organization {org_id} ({used} of {limit} bytes); "
            "batches are refused until compaction frees space or an operator raises "
            "max_state_bytes_per_org; to keep less, lower the keepSeconds of the filters' "
            'retention tiers (a filter\'s own "retention", else server.retention or '
            "server.org_retention) and run eventtally compact"
        )
        self.used = used
        self.limit = limit


class BackfillError(ValueError):
    """A backfill that cannot run (unknown filter, no log, overlapping an earlier one...)."""


class RepeatedBackfillError(BackfillError):
    """A snapshot backfill of bytes already merged into the organization."""


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


_EMPTY_STATS = eventtally.IngestStats(events=0, accepted=0)


class Runtime:
    """All organizations' engines, kept in step with a :class:`MetadataStore`, made durable by
    :class:`~eventtally.server.storage.Storage`.  Call :meth:`open` before serving."""

    def __init__(
        self,
        store: MetadataStore,
        *,
        clock: Callable[[], float] | None = None,
        durability: DurabilityConfig | None = None,
        snapshot_interval: float = 10.0,
        poll_interval: float = 1.0,
        max_state_bytes: int = 0,
        registry: Registry | None = None,
        retention: Callable[[str], list[dict[str, Any]]] | None = None,
        compaction_interval: float = 0.0,
    ) -> None:
        self.store = store
        self.clock: Callable[[], float] = clock or time.time
        self.cfg = durability or DurabilityConfig()
        self.snapshot_interval = snapshot_interval
        self.poll_interval = poll_interval
        self.max_state_bytes = max_state_bytes
        #: org id → default retention tiers for its filters without their own
        self.retention: Callable[[str], list[dict[str, Any]]] = retention or (lambda _org: [])
        self.compaction_interval = compaction_interval
        #: org id → wall time of its last compaction
        self.last_compaction: dict[str, float] = {}
        self.storage = Storage(store.data_dir, self.cfg)
        self.registry = registry or Registry()
        self.ready = False
        self.closed = False
        self.status = "starting"
        self.recovery: RecoveryReport[eventtally.Engine] | None = None
        self._orgs: dict[str, OrgState] = {}
        self._recovered_meta: dict[str, dict[str, Any]] = {}
        self._sync_lock = threading.RLock()
        self._synced: Snapshot | None = None
        self._last_poll = 0.0
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0  # snapshot numbers when the WAL is off
        self._gen_lock = threading.Lock()
        self._init_metrics()

    # ------------------------------------------------------------------ metrics

    def _init_metrics(self) -> None:
        r = self.registry
        self.m_events = r.counter(
            "eventtally_events_received_total",
            "Events in batches accepted by the ingest endpoint (after deduplication)",
            ["org"],
        )
        self.m_accepted = r.counter(
            "eventtally_events_accepted_total", "Events accepted by the engine", ["org"]
        )
        self.m_dropped = r.counter(
            "eventtally_events_dropped_total",
            "Events of accepted batches dropped by the engine, by reason",
            ["org", "reason"],
        )
        self.m_refused = r.counter(
            "eventtally_ingest_refused_total",
            "Batches refused after authentication, by reason (state_limit, wal_error, ...)",
            ["org", "reason"],
        )
        self.m_snapshots = r.counter(
            "eventtally_snapshots_total", "Snapshots written, by outcome", ["result"]
        )
        self.m_dedup = r.counter(
            "eventtally_dedup_dropped_total",
            "Events dropped as duplicates of a messageId seen in the window",
            ["org"],
        )
        self.m_compactions = r.counter(
            "eventtally_compactions_total", "Compaction runs per organization, by outcome",
            ["org", "result"],
        )  # fmt: skip
        self.m_compacted = r.counter(
            "eventtally_compaction_cells_total",
            "Cells merged into coarser tiers or dropped past the last tier",
            ["org", "action"],
        )
        self.m_compaction_seconds = r.histogram(
            "eventtally_compaction_duration_seconds", "Time to compact one organization's state"
        )
        self.m_snapshot_seconds = r.histogram(
            "eventtally_snapshot_duration_seconds",
            "Time to serialize and durably write one organization's snapshot",
        )
        r.collector(self._collect)

    def _collect(self) -> Iterable[Family]:
        now = time.time()
        ready = Family("eventtally_ready", "gauge", "1 once recovery has finished")
        yield ready.add(1 if self.ready else 0)
        state = Family(
            "eventtally_state_bytes", "gauge", "Aggregate state per organization (approximate)"
        )
        age = Family(
            "eventtally_snapshot_age_seconds",
            "gauge",
            "Seconds since the organization's newest snapshot was written",
        )
        seq = Family(
            "eventtally_snapshot_wal_seq", "gauge", "WAL sequence number of the newest snapshot"
        )
        tiers = Family(
            "eventtally_state_tier_bytes",
            "gauge",
            "Aggregate state per organization and retention tier (approximate)",
        )
        last = Family(
            "eventtally_last_compaction_timestamp_seconds",
            "gauge",
            "Unix time of the organization's last compaction",
        )
        for org_id, st in sorted(self._orgs.items()):
            labels = (("org", org_id),)
            state.add(st.engine.state_bytes(), labels)
            per_tier: dict[str, int] = {}
            for usage in st.engine.tier_usage().values():
                for t in usage:
                    name = f"{t['intervalCount']}x{t['intervalType']}"
                    per_tier[name] = per_tier.get(name, 0) + int(t["bytes"])
            for name, n in sorted(per_tier.items()):
                tiers.add(n, (("org", org_id), ("tier", name)))
            if org_id in self.last_compaction:
                last.add(self.last_compaction[org_id], labels)
            if st.snapshot_time is not None:
                age.add(max(0.0, now - st.snapshot_time), labels)
            if st.snapshot_seq is not None:
                seq.add(st.snapshot_seq, labels)
        yield state
        yield tiers
        yield last
        yield age
        yield seq
        wal = self.storage.wal
        if wal is not None:
            s = wal.stats()
            yield Family(
                "eventtally_wal_bytes_written_total",
                "counter",
                "Bytes appended to the write-ahead log by this process",
            ).add(s.bytes_written)
            yield Family(
                "eventtally_wal_records_total", "counter", "Records appended by this process"
            ).add(s.records)
            yield Family("eventtally_wal_fsyncs_total", "counter", "fsync calls on the log").add(
                s.fsyncs
            )
            yield histogram_family(
                "eventtally_wal_fsync_duration_seconds",
                "fsync latency of the write-ahead log",
                s.fsync_buckets,
                s.fsync_seconds,
                s.fsyncs,
            )
            disk = sum(seg.size for seg in wal.segments())
            yield Family("eventtally_wal_disk_bytes", "gauge", "Bytes of log segments on disk").add(
                disk
            )
            yield Family("eventtally_wal_segments", "gauge", "Log segment files on disk").add(
                s.segments
            )
            yield Family("eventtally_wal_last_seq", "gauge", "Newest record's number").add(
                s.last_seq
            )
        dedup = self.storage.dedup
        if dedup is not None:
            d = dedup.stats()
            yield Family("eventtally_dedup_ids", "gauge", "messageIds remembered").add(d.ids)
            yield Family(
                "eventtally_dedup_checked_total", "counter", "Events checked for duplicates"
            ).add(d.checked)
            yield Family(
                "eventtally_dedup_evicted_total",
                "counter",
                "messageIds forgotten early to stay under dedup_max_ids",
            ).add(d.evicted)
        rep = self.recovery
        if rep is not None:
            yield Family(
                "eventtally_recovery_seconds", "gauge", "Duration of the last startup recovery"
            ).add(rep.seconds)
            yield Family(
                "eventtally_recovery_records", "gauge", "WAL records replayed at startup"
            ).add(rep.records_replayed)
            yield Family("eventtally_recovery_events", "gauge", "Events replayed at startup").add(
                rep.events
            )
            yield Family(
                "eventtally_recovery_torn_tail", "gauge", "1 if startup cut a torn WAL tail"
            ).add(1 if rep.torn_tail_cut else 0)

    # ------------------------------------------------------------------ engines

    def _new_engine(self) -> eventtally.Engine:
        # The engine needs at least one ingest at all times, while an organization may have
        # none (yet), and redefining its only ingest means removing it first.  A placeholder
        # ingest makes both work; it is never reachable: URLs route through the metadata, and
        # its id cannot be a real ingest id (those start with a letter or digit).
        return eventtally.Engine([dict(PLACEHOLDER_INGEST)], [], clock=self.clock)

    def _mark(self) -> int:
        """The snapshot number for a snapshot taken now (under the exclusive gate)."""
        wal = self.storage.wal
        if wal is not None:
            return wal.next_seq - 1
        with self._gen_lock:
            self._generation += 1
            return self._generation

    def _make_engine(self, org_id: str, data: bytes | None) -> eventtally.Engine | None:
        """``recover``'s factory: an engine from a snapshot payload, else a fresh one."""
        snap = self.store.snapshot
        if org_id not in snap.orgs:
            return None
        if data is not None:
            meta, engine_bytes = decode_state(data)
            engine = eventtally.Engine.from_bytes(engine_bytes, clock=self.clock)
            self._recovered_meta[org_id] = meta
            return engine
        legacy = self.storage.read_legacy(org_id)
        if legacy is not None:
            try:
                meta, engine_bytes = decode_legacy(legacy)
                engine = eventtally.Engine.from_bytes(engine_bytes, clock=self.clock)
            except eventtally.EventtallyError as exc:
                log.error("interim snapshot of %s unreadable (%s); starting empty", org_id, exc)
            else:
                log.info("loaded the interim server's snapshot of %s", org_id)
                meta["filterSince"] = {}
                self._recovered_meta[org_id] = meta
                return engine
        # No snapshot: a new organization (or every snapshot is unusable).  Build it from the
        # current definitions so that its logged batches (if any) can be replayed.
        st = OrgState(org_id, self._new_engine())
        self._apply_definitions(st, snap)
        self._recovered_meta[org_id] = st.meta()
        return st.engine

    def _state_from(self, org_id: str, engine: eventtally.Engine) -> OrgState:
        meta = self._recovered_meta.pop(org_id, {})
        st = OrgState(
            org_id,
            engine,
            ingests=dict(meta.get("ingests", {})),
            filters=dict(meta.get("filters", {})),
            filter_since={k: int(v) for k, v in dict(meta.get("filterSince", {})).items()},
            backfills=list(meta.get("backfills", [])),
        )
        return st

    def _definition_changes(
        self, st: OrgState, snap: Snapshot
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[tuple[str, dict[str, Any]]]]:
        """(ingests to (re)define, filters to remove, filters to add) to match ``snap``."""
        ingests = [
            (rec.id, rec.definition)
            for rec in snap.org_ingests(st.org_id)
            if st.ingests.get(rec.id) != _text(rec.definition)
        ]
        wanted = {f.id: f for f in snap.filters.get(st.org_id, ()) if f.enabled}
        remove = [
            fid
            for fid, text in st.filters.items()
            if fid not in wanted or _text(wanted[fid].definition) != text
        ]
        add = [
            (fid, f.definition)
            for fid, f in wanted.items()
            if fid not in st.filters or fid in remove
        ]
        return ingests, remove, add

    def _apply_definitions(self, st: OrgState, snap: Snapshot) -> bool:
        """Change ``st``'s engine to match ``snap`` (caller holds the exclusive gate or owns
        ``st``); True if anything changed."""
        ingests, remove, add = self._definition_changes(st, snap)
        if not (ingests or remove or add):
            return False
        engine = st.engine
        mark = self._mark() if self.storage.wal is not None else 0
        for iid, defn in ingests:
            try:
                if iid in st.ingests:
                    engine.remove_ingest(iid)
                engine.add_ingest(defn)
                st.ingests[iid] = _text(defn)
            except eventtally.EventtallyError as exc:
                log.error("ingest %s of %s could not be (re)defined: %s", iid, st.org_id, exc)
        for fid in remove:
            with contextlib.suppress(eventtally.NotFoundError):
                engine.remove_filter(fid)
            st.filters.pop(fid, None)
            st.filter_since.pop(fid, None)
            st.backfills = [b for b in st.backfills if b.get("filter") != fid]
        for fid, defn in add:
            try:
                engine.add_filter(defn)
                st.filters[fid] = _text(defn)
                st.filter_since[fid] = mark
            except eventtally.EventtallyError as exc:
                log.error("filter %s of %s could not be added: %s", fid, st.org_id, exc)
        st.dirty = True
        return True

    def _sync_org(self, st: OrgState, snap: Snapshot) -> None:
        """Apply definition changes and snapshot them before any batch sees them."""
        ingests, remove, add = self._definition_changes(st, snap)
        if not (ingests or remove or add):
            return
        with st.save_lock, st.gate.exclusive():
            if not self._apply_definitions(st, snap):
                return
            if not self.ready:
                return  # open() snapshots every changed organization before serving
            try:
                self._write_snapshot(st, *self._capture(st))
            except Exception:
                st.needs_snapshot = True
                log.exception(
                    "snapshot after a definition change of %s failed; its ingest is refused "
                    "until a snapshot succeeds",
                    st.org_id,
                )

    def sync(self) -> None:
        """Bring every organization's engine in line with the store's current snapshot."""
        if not self.ready:
            return  # open() builds the engines
        with self._sync_lock:
            snap = self.store.snapshot
            if snap is self._synced:
                return
            orgs = dict(self._orgs)
            for org_id in snap.orgs:
                st = orgs.get(org_id)
                if st is None:
                    st = self._state_from(org_id, self._make_engine(org_id, None) or
                                          self._new_engine())  # fmt: skip
                    orgs[org_id] = st
                    if self.ready:
                        self.save_org(st, force=True)
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
        if not self.ready:
            raise NotReadyError("recovering")
        self.ensure_synced()
        return self._orgs[org_id]

    def engine(self, org_id: str) -> eventtally.Engine:
        return self.org(org_id).engine

    def org_ids(self) -> list[str]:
        return sorted(self._orgs)

    def write_refusal(self) -> str | None:
        """Why ingest would be refused with 503 now (``/readyz``), or ``None`` when it works.

        Covers everything that makes a well-formed batch a 503 for reasons of the server, not
        of load: recovery not finished, shutting down, the write-ahead log closed, failed or
        unable to write (probed, see ``WriteAheadLog.refusal``), and organizations whose
        definitions wait for a snapshot that failed (retried every snapshot interval).
        """
        if not self.ready:
            return self.status
        if self.closed:
            return "shutting down"
        wal = self.storage.wal
        if wal is not None:
            reason = wal.refusal()
            if reason is not None:
                return reason
        pending = sorted(o for o, st in self._orgs.items() if st.needs_snapshot)
        if pending:
            return (
                "the definitions of organization(s) " + ", ".join(pending) + " are not persisted "
                "yet (a snapshot failed; retried every snapshot interval)"
            )
        return None

    # ------------------------------------------------------------------ startup

    def open(self, *, stop: threading.Event | None = None) -> None:
        """Lock the data directory, recover every organization, and become ready."""
        if self.ready:
            return
        self.status = "waiting for the data directory lock"
        self.storage.open(stop=stop)
        try:
            self._recover()
        except BaseException:
            self.status = "recovery failed"
            self.storage.close()
            raise

    def _recover(self) -> None:
        storage = self.storage
        assert storage.wal is not None and storage.snapshots is not None
        self.status = "recovering"
        snap = self.store.snapshot
        report = recover(
            storage.snapshots, storage.wal, self._make_engine, org_ids=sorted(snap.orgs)
        )
        self.recovery = report
        with self._gen_lock:
            newest = max((f.wal_seq for f in storage.snapshots.files()), default=0)
            self._generation = max(newest, storage.wal.last_seq)
        orgs: dict[str, OrgState] = {}
        for org_id, engine in report.engines.items():
            st = self._state_from(org_id, engine)
            seq = report.snapshot_seqs.get(org_id)
            if seq is not None:
                st.snapshot_seq = seq
                st.snapshot_time = time.time()
            st.dirty = report.records_replayed > 0
            orgs[org_id] = st
        for st in orgs.values():
            changed = self._apply_definitions(st, snap)
            if changed or st.snapshot_seq is None:
                self._write_snapshot(st, *self._capture(st))
        self._orgs = orgs
        self._synced = snap
        if not self.cfg.wal:
            for st in orgs.values():
                if st.dirty:
                    self._write_snapshot(st, *self._capture(st))
            storage.close_wal()
        if storage.dedup is not None:
            self._rebuild_dedup()
        self.ready = True
        self.status = "ready"

    def _rebuild_dedup(self) -> None:
        """Remember the messageIds of the logged batches still inside the dedup window."""
        wal, dedup = self.storage.wal, self.storage.dedup
        if wal is None or dedup is None:
            return
        horizon = to_ms(time.time() - self.cfg.dedup_window_s)
        ingests = self.store.snapshot.ingests
        n = 0
        for rec in wal.replay():
            if rec.received_at_ms < horizon:
                continue
            ing = ingests.get(rec.ingest_id or "")
            if ing is not None:
                n += dedup.observe_batch(rec.payload, ing.definition)
        if n:
            log.info("dedup: %d messageId(s) remembered from the log", n)

    # ------------------------------------------------------------------ ingest

    def ingest(
        self, org_id: str, ingest_id: str, body: bytes, *, received_at: float | None = None
    ) -> eventtally.IngestStats:
        """Prepare, log, apply one batch; returns the engine's ``IngestStats``.

        Raises the engine's errors (``JsonError``, ``FormatError``, ...) before anything is
        logged or applied; :class:`StateLimitError` when the organization is over its limit;
        ``OSError`` when the log cannot persist the batch (it is then not applied).
        """
        st = self.org(org_id)
        if self.closed:
            raise NotReadyError("shutting down")
        if st.needs_snapshot:
            self.m_refused.inc(org_id, "snapshot_pending")
            raise OSError("the organization's definitions are not persisted yet")
        if self.max_state_bytes:
            used = st.engine.state_bytes()
            if used >= self.max_state_bytes:
                self.m_refused.inc(org_id, "state_limit")
                raise StateLimitError(org_id, used, self.max_state_bytes)
        ms = to_ms(self.clock() if received_at is None else received_at)
        dedup = self.storage.dedup
        plan = None
        if dedup is not None:
            ingest = self.store.snapshot.ingests.get(ingest_id)
            if ingest is not None:
                plan = dedup.check_batch(body, ingest.definition)
                if plan.dropped:
                    self.m_dedup.inc(org_id, amount=plan.dropped)
                body = plan.body
        try:
            if plan is not None and plan.empty:
                stats = _EMPTY_STATS
            else:
                stats = self._ingest_logged(st, org_id, ingest_id, body, ms)
        except BaseException:
            if plan is not None:
                dedup.abort(plan)  # type: ignore[union-attr]
            raise
        if plan is not None:
            dedup.commit(plan)  # type: ignore[union-attr]
        self.m_events.inc(org_id, amount=stats.events)
        self.m_accepted.inc(org_id, amount=stats.accepted)
        for reason, n in stats.dropped.items():
            self.m_dropped.inc(org_id, reason, amount=n)
        return stats

    def _ingest_logged(
        self, st: OrgState, org_id: str, ingest_id: str, body: bytes, ms: int
    ) -> eventtally.IngestStats:
        with st.gate.shared():
            if self.closed:  # checked under the gate: the final snapshot covers every 200
                raise NotReadyError("shutting down")
            prepared = st.engine.prepare(body, ingest_id=ingest_id, received_ms=ms)
            wal = self.storage.wal
            if wal is not None:
                try:
                    wal.append(WalRecord(org_id, body, ingest_id, ms))
                except OSError:
                    self.m_refused.inc(org_id, "wal_error")
                    raise
            stats = st.engine.apply(prepared)
            st.dirty = True
        return stats

    # ------------------------------------------------------------------ snapshots

    def _capture(self, st: OrgState) -> tuple[int, bytes]:
        """(mark, payload) of ``st`` (caller holds the exclusive gate)."""
        mark = self._mark()
        data = encode_state(st.meta(), st.engine.to_bytes())
        st.dirty = False
        return mark, data

    def _write_snapshot(self, st: OrgState, mark: int, data: bytes) -> None:
        snapshots = self.storage.snapshots
        assert snapshots is not None
        t0 = time.perf_counter()
        try:
            path = snapshots.write(st.org_id, data, mark)
        except BaseException:
            st.dirty = True
            self.m_snapshots.inc("error")
            raise
        self.m_snapshot_seconds.observe(time.perf_counter() - t0)
        self.m_snapshots.inc("ok")
        st.snapshot_seq = mark
        st.snapshot_time = time.time()
        st.needs_snapshot = False
        self.storage.link_latest(st.org_id, path)

    def save_org(self, st: OrgState, *, force: bool = False) -> bool:
        """Write ``st``'s snapshot if it changed (or ``force``); True if written."""
        with st.save_lock:
            if not (st.dirty or force or st.needs_snapshot):
                return False
            with st.gate.exclusive():
                mark, data = self._capture(st)
            self._write_snapshot(st, mark, data)
            return True

    def save_all(self, *, force: bool = False) -> int:
        """Snapshot every changed organization, then delete the log segments every organization's
        kept snapshots cover (outside the retention); returns how many snapshots were written."""
        if not self.ready:
            return 0
        written = 0
        for st in list(self._orgs.values()):
            try:
                written += self.save_org(st, force=force or st.snapshot_seq is None)
            except Exception:
                log.exception("saving the snapshot of %s failed", st.org_id)
        written += self._refresh_pinning()
        self._truncate()
        return written

    def _refresh_pinning(self) -> int:
        """Re-snapshot idle organizations whose old snapshots keep deletable segments alive."""
        wal, snapshots = self.storage.wal, self.storage.snapshots
        if wal is None or snapshots is None:
            return 0
        deletable = wal.truncate_before(2**63, dry_run=True)
        if not deletable:
            return 0
        names = {p.name for p in deletable}
        keep_from = next((s.first_seq for s in wal.segments() if s.path.name not in names), 0)
        oldest: dict[str, int] = {}
        for f in snapshots.files():
            oldest.setdefault(f.org_id, f.wal_seq)
        written = 0
        for org_id, st in list(self._orgs.items()):
            if oldest.get(org_id, 0) + 1 < keep_from and not st.dirty:
                try:
                    written += self.save_org(st, force=True)
                except Exception:
                    log.exception("refreshing the snapshot of %s failed", org_id)
        return written

    def _truncate(self) -> None:
        wal, snapshots = self.storage.wal, self.storage.snapshots
        if wal is None or snapshots is None or not self._orgs:
            return
        try:
            wal.truncate_before(snapshots.safe_wal_seq(self._orgs) + 1)
        except OSError:
            log.exception("deleting covered WAL segments failed")

    # ------------------------------------------------------------------ compaction

    def compact_org(self, org_id: str, *, now: float | None = None) -> dict[str, Any]:
        """Compact ``org_id``'s engine at ``now`` (Unix seconds, default the runtime clock) with
        its default retention for filters without their own; returns the engine's report.

        Runs under the shared gate, like a batch: compaction and ``apply`` serialize on the
        engine's state lock, a snapshot (exclusive gate) holds either the state before or the
        state after, never half of it, and a record replayed after a compacted snapshot is
        routed into the tier holding its time, so it is counted once.  A crash before the next
        snapshot loses nothing: recovery replays onto the older snapshot and the next
        compaction does the same work again.
        """
        st = self.org(org_id)
        if not self.ready:
            raise NotReadyError("still recovering")
        when = self.clock() if now is None else now
        t0 = time.perf_counter()
        try:
            with st.gate.shared():
                report = st.engine.compact(when, default_retention=self.retention(org_id))
                if report["cells_merged"] or report["cells_dropped"]:
                    st.dirty = True
        except Exception:
            self.m_compactions.inc(org_id, "error")
            raise
        self.m_compaction_seconds.observe(time.perf_counter() - t0)
        self.m_compactions.inc(org_id, "ok")
        self.m_compacted.inc(org_id, "merged", amount=report["cells_merged"])
        self.m_compacted.inc(org_id, "dropped", amount=report["cells_dropped"])
        self.last_compaction[org_id] = time.time()
        for skipped in report.get("skipped", []):
            log.warning(
                "compaction of %s skipped filter %s: %s",
                org_id,
                skipped["filter_id"],
                skipped["reason"],
            )
        return report

    def compact_all(self, *, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Compact every organization; org id → report (an organization that fails is logged
        and left out)."""
        out: dict[str, dict[str, Any]] = {}
        for org_id in self.org_ids():
            try:
                out[org_id] = self.compact_org(org_id, now=now)
            except Exception:
                log.exception("compacting %s failed", org_id)
        return out

    def _maintain(self) -> None:
        interval = self.snapshot_interval
        compact_every = self.compaction_interval
        ticks = [t for t in (self.poll_interval, interval, compact_every) if t]
        tick = min(ticks)
        next_save = time.monotonic() + interval
        next_compact = time.monotonic() + compact_every
        while not self._stop.wait(tick):
            try:
                self.poll()
            except Exception:
                log.exception("metadata refresh failed")
            if compact_every and time.monotonic() >= next_compact:
                self.compact_all()
                next_compact = time.monotonic() + compact_every
            if interval and time.monotonic() >= next_save:
                self.save_all()
                next_save = time.monotonic() + interval

    def start(self) -> None:
        """Start the background thread that polls metadata and saves snapshots."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._maintain, name="eventtally-maintenance", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the background thread; fsync the log, snapshot every changed organization,
        delete covered segments, close the log and release the data directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.closed:
            return
        self.closed = True
        try:
            if self.ready:
                wal = self.storage.wal
                if wal is not None:
                    try:
                        wal.sync()
                    except OSError:
                        log.exception("final WAL fsync failed")
                self.save_all()
        finally:
            self.ready = False
            self.status = "stopped"
            self.storage.close()

    # ------------------------------------------------------------------ backfill

    def _backfill_target(self, org_id: str, filter_id: str) -> OrgState:
        try:
            st = self.org(org_id)
        except KeyError:
            raise BackfillError(f"unknown organization {org_id!r}") from None
        if filter_id not in st.filters:
            raise BackfillError(
                f"filter {filter_id!r} is not an enabled filter of organization {org_id!r}"
            )
        return st

    def _temp_engine(self, st: OrgState, filter_id: str) -> eventtally.Engine:
        ingests = [dict(PLACEHOLDER_INGEST), *(json.loads(t) for t in st.ingests.values())]
        return eventtally.Engine(ingests, [json.loads(st.filters[filter_id])], clock=self.clock)

    def _merge_backfill(
        self,
        st: OrgState,
        filter_id: str,
        temp: eventtally.Engine,
        records: list[dict[str, Any]],
    ) -> None:
        """Merge ``temp`` (state for ``filter_id`` only) into ``st``, record the backfill and
        snapshot it."""
        text = st.filters.get(filter_id)
        since = st.filter_since.get(filter_id)
        with st.save_lock:
            with st.gate.exclusive():
                if st.filters.get(filter_id) != text or st.filter_since.get(filter_id) != since:
                    raise BackfillError(f"filter {filter_id!r} changed during the backfill")
                for fid, other in st.filters.items():
                    if fid != filter_id:
                        temp.add_filter(json.loads(other))
                st.engine.merge(temp)
                st.backfills.extend(records)
                mark, data = self._capture(st)
            self._write_snapshot(st, mark, data)

    def _check_overlap(self, st: OrgState, filter_id: str, record: dict[str, Any]) -> None:
        for b in st.backfills:
            if b.get("filter") != filter_id or b.get("kind") != record["kind"]:
                continue
            if record["kind"] == "wal":
                if b["fromMs"] < record["toMs"] and record["fromMs"] < b["toMs"]:
                    raise BackfillError(
                        f"filter {filter_id!r} was already backfilled from the log for an "
                        f"overlapping time range ({_iso_ms(b['fromMs'])} to {_iso_ms(b['toMs'])})"
                    )
            elif b.get("file") == record.get("file"):
                raise BackfillError(
                    f"filter {filter_id!r} was already backfilled from {record['file']} "
                    "(same path, size and modification time); pass force to do it again"
                )

    def backfill_wal(
        self,
        org_id: str,
        filter_id: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        progress: Progress | None = None,
    ) -> BackfillResult:
        """Apply ``filter_id`` to the logged batches of ``org_id`` it never saw (those logged
        before it was added) whose ingest time is in ``[start_ms, end_ms)``."""
        st = self._backfill_target(org_id, filter_id)
        wal = self.storage.wal
        if wal is None:
            raise BackfillError("the write-ahead log is off ([durability] wal = false)")
        lo = -(2**62) if start_ms is None else start_ms
        hi = 2**62 if end_ms is None else end_ms
        if lo >= hi:
            raise BackfillError("--from must be before --to")
        since = st.filter_since.get(filter_id, 0)
        record: dict[str, Any] = {
            "filter": filter_id,
            "kind": "wal",
            "fromMs": lo,
            "toMs": hi,
            "sinceSeq": since,
        }
        self._check_overlap(st, filter_id, record)
        result = BackfillResult(org_id, filter_id, "wal", since_seq=since)
        t0 = time.perf_counter()
        temp = self._temp_engine(st, filter_id)
        total = sum(s.size for s in wal.segments()) or 1
        done_bytes = 0
        last_report = 0.0

        def wanted(seq: int, org: str) -> bool:
            return org == org_id and seq <= since

        for rec in wal.replay(0, where=wanted):
            done_bytes += len(rec.payload)
            if result.oldest_retained_ms is None or rec.received_at_ms < result.oldest_retained_ms:
                result.oldest_retained_ms = rec.received_at_ms
            if not lo <= rec.received_at_ms < hi:
                continue
            try:
                stats = temp.ingest(
                    rec.payload, ingest_id=rec.ingest_id, received_ms=rec.received_at_ms
                )
            except eventtally.EventtallyError as exc:
                result.failed += 1
                log.warning("backfill: record %d skipped: %s", rec.seq, exc)
                continue
            result.records += 1
            result.events += stats.events
            result.accepted += stats.accepted
            if progress is not None and time.monotonic() - last_report >= 0.5:
                last_report = time.monotonic()
                progress({**result.to_dict(), "bytesDone": done_bytes, "bytesTotal": total})
        record.update(records=result.records, events=result.events, at=time.time())
        if result.records:
            self._merge_backfill(st, filter_id, temp, [record])
        result.seconds = time.perf_counter() - t0
        if progress is not None:
            progress({**result.to_dict(), "bytesDone": total, "bytesTotal": total})
        log.info(
            "backfill of %s/%s from the log: %d record(s), %d event(s), %d failed",
            org_id, filter_id, result.records, result.events, result.failed,
        )  # fmt: skip
        return result

    def backfill_files(
        self,
        org_id: str,
        filter_id: str,
        paths: Sequence[str | os.PathLike[str]],
        *,
        ingest_id: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> BackfillResult:
        """Apply ``filter_id`` to archive files (``.json``/``.ndjson``/``.jsonl``, optionally
        gzipped; other names are read as gzipped or plain NDJSON) through ``ingest_id``'s
        timestamp settings (default: the organization's only ingest)."""
        st = self._backfill_target(org_id, filter_id)
        real_ingests = [i for i in st.ingests if i != PLACEHOLDER_INGEST["id"]]
        if ingest_id is None:
            if len(real_ingests) != 1:
                raise BackfillError(
                    f"organization {org_id!r} has {len(real_ingests)} ingests; name one "
                    "(--ingest) whose timestamp settings apply to the files"
                )
            ingest_id = real_ingests[0]
        elif ingest_id not in st.ingests:
            raise BackfillError(f"unknown ingest {ingest_id!r} in organization {org_id!r}")
        files = [Path(p).resolve() for p in paths]
        records = []
        for f in files:
            try:
                info = f.stat()
            except OSError as exc:
                raise BackfillError(f"cannot read {f}: {exc.strerror}") from exc
            rec: dict[str, Any] = {
                "filter": filter_id,
                "kind": "file",
                "file": f"{f}:{info.st_size}:{info.st_mtime_ns}",
            }
            if not force:
                self._check_overlap(st, filter_id, rec)
            records.append(rec)
        result = BackfillResult(org_id, filter_id, "file", files=[str(f) for f in files])
        t0 = time.perf_counter()
        temp = self._temp_engine(st, filter_id)
        total = sum(f.stat().st_size for f in files) or 1
        base = 0
        with tempfile.TemporaryDirectory(prefix="eventtally-backfill-") as tmp:
            for i, f in enumerate(files):
                size = f.stat().st_size

                def report(done: int, _total: int, base: int = base) -> None:
                    if progress is not None:
                        progress({**result.to_dict(), "bytesDone": base + done,
                                  "bytesTotal": total})  # fmt: skip

                try:
                    stats = temp.ingest_file(
                        _readable_name(f, Path(tmp), i), ingest_id=ingest_id, progress=report
                    )
                except eventtally.EventtallyError as exc:
                    raise BackfillError(f"{f}: {exc}") from exc
                result.records += 1
                result.events += stats.events
                result.accepted += stats.accepted
                base += size
        if result.events:
            # one record per file, so each file is refused as a repeat on its own
            at = time.time()
            self._merge_backfill(st, filter_id, temp, [{**r, "at": at} for r in records])
        result.seconds = time.perf_counter() - t0
        if progress is not None:
            progress({**result.to_dict(), "bytesDone": total, "bytesTotal": total})
        log.info(
            "backfill of %s/%s from %d file(s): %d event(s)",
            org_id, filter_id, len(files), result.events,
        )  # fmt: skip
        return result

    # ------------------------------------------------------------- snapshot backfill

    def backfill_snapshot(
        self, org_id: str, data: bytes, *, source: str = "snapshot"
    ) -> BackfillResult:
        """Merge an engine snapshot (``Engine.to_bytes``/``save``, e.g. from
        ``eventtally.dask.aggregate``) into ``org_id``'s live state.

        The bytes are untrusted: they are decoded and validated like any snapshot. The
        snapshot's filter definitions must equal the organization's enabled filters (same ids,
        same definitions; the error names what differs). A snapshot already merged (same
        SHA-256 of its bytes) is refused. The merge, its record and a new snapshot of the
        organization are written before this returns, so the result survives a crash."""
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        try:
            st = self.org(org_id)
        except KeyError:
            raise BackfillError(f"unknown organization {org_id!r}") from None
        try:
            incoming = eventtally.Engine.from_bytes(data, clock=self.clock)
        except eventtally.SnapshotError as exc:
            raise BackfillError(f"{source}: not a valid engine snapshot: {exc}") from exc
        theirs = {f["id"]: f for f in incoming.filter_definitions()}
        t0 = time.perf_counter()
        result = BackfillResult(org_id, ",".join(sorted(theirs)), "snapshot", files=[source])
        record = {"filter": None, "kind": "snapshot", "sha256": digest, "source": source}
        with st.save_lock:
            with st.gate.exclusive():
                for b in st.backfills:
                    if b.get("kind") == "snapshot" and b.get("sha256") == digest:
                        raise RepeatedBackfillError(
                            f"{source}: this snapshot (sha256 {digest[:16]}...) was already "
                            f"merged into {org_id!r}"
                        )
                mine = {f["id"]: f for f in st.engine.filter_definitions()}
                problem = _definition_difference(mine, theirs, org_id)
                if problem:
                    raise BackfillError(f"{source}: {problem}")
                try:
                    st.engine.merge(incoming)
                except eventtally.EventtallyError as exc:
                    raise BackfillError(f"{source}: {exc}") from exc
                st.backfills.append({**record, "at": time.time()})
                mark, state = self._capture(st)
            self._write_snapshot(st, mark, state)
        result.records = 1
        result.seconds = time.perf_counter() - t0
        log.info("merged snapshot %s (sha256 %s) into %s", source, digest[:16], org_id)
        return result


def _definition_difference(
    mine: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]], org_id: str
) -> str:
    """Why a snapshot with filters ``theirs`` cannot merge into an organization with
    ``mine`` ("" when they are equal): the ids only on one side, and for each shared id the
    definition fields that differ."""
    parts = []
    only_theirs = sorted(set(theirs) - set(mine))
    only_mine = sorted(set(mine) - set(theirs))
    if only_theirs:
        parts.append(f"filters {only_theirs} are in the snapshot but not enabled in {org_id!r}")
    if only_mine:
        parts.append(f"filters {only_mine} of {org_id!r} are not in the snapshot")
    for fid in sorted(set(mine) & set(theirs)):
        a, b = mine[fid], theirs[fid]
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if fields:
            parts.append(f"filter {fid!r} differs in {', '.join(fields)}")
    if parts:
        return "filter definitions differ: " + "; ".join(parts)
    return ""


def parse_time_ms(value: object, what: str = "time") -> int | None:
    """Unix seconds (a number or numeric text) or ISO 8601 text (UTC unless it says otherwise)
    → Unix ms; ``None`` and ``""`` give ``None``; ``ValueError`` names ``what`` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what}: expected a time, got {value!r}")
    if isinstance(value, int | float):
        return round(float(value) * 1000)
    try:
        return round(float(value) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what}: not ISO 8601 or Unix seconds: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _iso_ms(ms: int) -> str:
    if abs(ms) >= 2**61:
        return "-inf" if ms < 0 else "+inf"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _readable_name(path: Path, tmp: Path, i: int) -> str:
    """``path``, or a link to it whose name ``Engine.ingest_file`` accepts (Segment archives
    are gzipped NDJSON whatever they are called)."""
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith((".json", ".ndjson", ".jsonl")):
        return str(path)
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    link = tmp / f"archive-{i}.ndjson{'.gz' if gz else ''}"
    os.symlink(path, link)
    return str(link)
