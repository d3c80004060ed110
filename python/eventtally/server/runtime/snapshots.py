"""Organization snapshots: capture under the exclusive gate, durable write, log truncation.

Guarantees:
- A snapshot tagged ``wal_seq`` holds exactly the organization's records numbered
  ``<= wal_seq`` (it is captured under the exclusive gate), so replay never double-counts.
- :meth:`RuntimeSnapshots.save_all` deletes only the log segments every organization's kept
  snapshots cover (and outside the retention), re-snapshotting idle organizations whose old
  snapshots would keep deletable segments alive.
"""

from __future__ import annotations

import logging
import time

from ..storage import encode_state
from .state import OrgState
from .telemetry import RuntimeTelemetry

log = logging.getLogger("eventtally.server")


class RuntimeSnapshots(RuntimeTelemetry):
    """Takes, writes and prunes the organizations' snapshots."""

    def _mark(self) -> int:
        """The snapshot number for a snapshot taken now (under the exclusive gate)."""
        wal = self.storage.wal
        if wal is not None:
            return wal.next_seq - 1
        with self._gen_lock:
            self._generation += 1
            return self._generation

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
