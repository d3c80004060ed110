"""Compaction, the maintenance thread (metadata polling, periodic snapshots) and the stop.

Guarantees:
- Compaction never makes a batch wait for it: it runs outside the organization's gate, and the
  engine takes its state lock for one bounded step at a time, so a concurrent batch waits for
  one step at most.  It holds the organization's ``save_lock``, which everything that takes the
  exclusive gate (a snapshot, a definition change, a backfill merge) takes first: those wait for
  the compaction before they close the gate, so a snapshot holds the state before or after a
  compaction, never half of it, and batches keep flowing while it waits.
- :meth:`RuntimeMaintenance.close` fsyncs the log, snapshots every changed organization,
  deletes covered log segments (outside the retention) and releases the data directory.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import (
    NotReadyError,
)
from .ingest import RuntimeIngest

log = logging.getLogger("eventtally.server")


class RuntimeMaintenance(RuntimeIngest):
    """Compacts, polls, snapshots in the background, and stops."""

    def compact_org(self, org_id: str, *, now: float | None = None) -> dict[str, Any]:
        """Compact ``org_id``'s engine at ``now`` (Unix seconds, default the runtime clock) with
        its default retention for filters without their own; returns the engine's report.

        Runs under ``st.save_lock``, not the gate: batches apply between the engine's bounded
        compaction steps (each takes the state lock briefly), and a snapshot, which takes
        ``save_lock`` before the exclusive gate, waits for the whole compaction without closing
        the gate meanwhile, so it holds the state before or after, never half of it.  A record
        replayed after a compacted snapshot is routed into the tier holding its time, so it is
        counted once.  A crash before the next snapshot loses nothing: recovery replays onto
        the older snapshot and the next compaction does the same work again.
        """
        st = self.org(org_id)
        if not self.ready:
            raise NotReadyError(self.status)
        when = self.clock() if now is None else now
        t0 = time.perf_counter()
        try:
            with st.save_lock:
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
