"""Startup: lock the data directory, recover every organization, become ready.

Guarantees:
- :meth:`RuntimeRecovery.open` locks the data directory, loads each organization's newest valid
  snapshot (falling back to older ones), replays the log after it, cuts a torn tail (logged),
  and only then sets ``ready``.
- Each record carries its ingest time in ms, and replay hands the engine that same time, so
  events timestamped at ingest time land in the same buckets after a crash.
"""

from __future__ import annotations

import logging
import threading
import time

from eventtally.durability import recover, to_ms

from .engines import RuntimeEngines
from .state import OrgState

log = logging.getLogger("eventtally.server")


class RuntimeRecovery(RuntimeEngines):
    """Recovers the data directory."""

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
        view = self.store.view
        report = recover(
            storage.snapshots, storage.wal, self._make_engine, org_ids=sorted(view.orgs)
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
            changed = self._apply_definitions(st, view)
            if changed or st.snapshot_seq is None:
                self._write_snapshot(st, *self._capture(st))
        self._orgs = orgs
        self._synced = view
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
        ingests = self.store.view.ingests
        n = 0
        for rec in wal.replay():
            if rec.received_at_ms < horizon:
                continue
            ing = ingests.get(rec.ingest_id or "")
            if ing is not None:
                n += dedup.observe_batch(rec.payload, ing.definition)
        if n:
            log.info("dedup: %d messageId(s) remembered from the log", n)
