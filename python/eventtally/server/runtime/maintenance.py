"""Compaction, the maintenance thread (metadata polling, periodic snapshots) and the stop.

Guarantees:
- Compaction never makes a batch wait for it: it runs outside the organization's gate, and the
  engine takes its state lock for one bounded step at a time; a batch arriving during a step
  leaves its delta to the step (the engine's pending queue) instead of waiting.  Background
  compactions run on their own thread (at ``compaction_nice`` lower priority on Linux, default
  none), so a long compaction does not delay a snapshot or a metadata poll; snapshots stay on
  the maintenance thread at normal priority.  It holds the organization's ``save_lock``, which
  everything that takes the exclusive gate (a snapshot, a definition change, a backfill merge)
  takes first: those wait for the compaction before they close the gate, so a snapshot holds
  the state before or after a compaction, never half of it, and batches keep flowing while it
  waits.
- :meth:`RuntimeMaintenance.close` fsyncs the log, snapshots every changed organization,
  deletes covered log segments (outside the retention) and releases the data directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..errors import (
    NotReadyError,
)
from .ingest import RuntimeIngest

log = logging.getLogger("eventtally.server")


def lower_thread_priority(nice: int) -> bool:
    """Adds ``nice`` to the calling thread's nice value (at most 19); True when done.  On Linux a
    thread has its own priority (``setpriority`` on its thread id); elsewhere, or when the
    system refuses, nothing changes (the priority is advice, not a guarantee) and False is
    returned."""
    if nice <= 0 or not hasattr(os, "setpriority") or not os.path.isdir("/proc/self/task"):
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except OSError as exc:
        log.warning("could not lower the compaction thread's priority: %s", exc)
        return False
    return True


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
        ticks = [t for t in (self.poll_interval, interval) if t]
        tick = min(ticks)
        next_save = time.monotonic() + interval
        while not self._stop.wait(tick):
            try:
                self.poll()
            except Exception:
                log.exception("metadata refresh failed")
            if interval and time.monotonic() >= next_save:
                self.save_all()
                next_save = time.monotonic() + interval

    def _compact_periodically(self) -> None:
        """The compaction thread: every ``compaction_interval`` seconds after the last one
        ended, compacts every organization, at ``compaction_nice`` lower priority."""
        lower_thread_priority(self.compaction_nice)
        while not self._stop.wait(self.compaction_interval):
            self.compact_all()

    def start(self) -> None:
        """Start the background threads: one polls metadata and saves snapshots, one compacts
        (when ``compaction_interval`` is set)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._maintain, name="eventtally-maintenance", daemon=True
            )
            self._thread.start()
        if self._compact_thread is None and self.compaction_interval:
            self._compact_thread = threading.Thread(
                target=self._compact_periodically, name="eventtally-compaction", daemon=True
            )
            self._compact_thread.start()

    def close(self) -> None:
        """Stop the background thread; fsync the log, snapshot every changed organization,
        delete covered segments, close the log and release the data directory."""
        self._stop.set()
        for thread in (self._compact_thread, self._thread):
            if thread is not None:
                thread.join()
        self._thread = self._compact_thread = None
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
