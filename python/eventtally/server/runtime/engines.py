"""Organization engines kept in step with the metadata (definition sync).

Guarantees:
- One :class:`eventtally.Engine` per organization holds all its ingests and filters, so every
  filter sees every event ingested into its organization and nothing from other organizations.
- :meth:`RuntimeEngines.sync` adds, replaces and removes ingests and filters to match the
  metadata view.  A disabled filter is removed with its aggregates; a filter whose definition
  changed starts empty; an unchanged filter keeps its aggregates across restarts.
- Definition changes are applied *and snapshotted* under the exclusive gate, so every logged
  record is replayed with the definitions it was first applied with.  When that snapshot
  fails the organization's batches are refused (:meth:`RuntimeEngines.write_refusal`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import eventtally

from ..errors import (
    NotReadyError,
)
from ..metadata import MetadataView
from ..storage import decode_legacy, decode_state
from .snapshots import RuntimeSnapshots
from .state import OrgState, _text

log = logging.getLogger("eventtally.server")


class RuntimeEngines(RuntimeSnapshots):
    """Builds the organizations' engines and follows the metadata."""

    def _new_engine(self) -> eventtally.Engine:
        """An engine with no ingest and no filter; :meth:`_apply_definitions` fills it."""
        return eventtally.Engine([], [], clock=self.clock)

    def _make_engine(self, org_id: str, data: bytes | None) -> eventtally.Engine | None:
        """``recover``'s factory: an engine from a snapshot payload, else a fresh one."""
        view = self.store.view
        if org_id not in view.orgs:
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
        self._apply_definitions(st, view)
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
        self, st: OrgState, view: MetadataView
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[tuple[str, dict[str, Any]]]]:
        """(ingests to (re)define, filters to remove, filters to add) to match ``view``."""
        ingests = [
            (rec.id, rec.definition)
            for rec in view.org_ingests(st.org_id)
            if st.ingests.get(rec.id) != _text(rec.definition)
        ]
        wanted = {f.id: f for f in view.filters.get(st.org_id, ()) if f.enabled}
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

    def _apply_definitions(self, st: OrgState, view: MetadataView) -> bool:
        """Change ``st``'s engine to match ``view`` (caller holds the exclusive gate or owns
        ``st``); True if anything changed."""
        ingests, remove, add = self._definition_changes(st, view)
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

    def _sync_org(self, st: OrgState, view: MetadataView) -> None:
        """Apply definition changes and snapshot them before any batch sees them."""
        ingests, remove, add = self._definition_changes(st, view)
        if not (ingests or remove or add):
            return
        with st.save_lock, st.gate.exclusive():
            if not self._apply_definitions(st, view):
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
            view = self.store.view
            if view is self._synced:
                return
            orgs = dict(self._orgs)
            for org_id in view.orgs:
                st = orgs.get(org_id)
                if st is None:
                    st = self._state_from(org_id, self._make_engine(org_id, None) or
                                          self._new_engine())  # fmt: skip
                    orgs[org_id] = st
                    if self.ready:
                        self.save_org(st, force=True)
                else:
                    self._sync_org(st, view)
            self._orgs = orgs
            self._synced = view

    def ensure_synced(self) -> None:
        """Cheap on the request path: only syncs when the snapshot object changed."""
        if self.store.view is not self._synced:
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

    @property
    def view(self) -> MetadataView:
        """The current metadata view: what the request path reads (the app reads the
        metadata only through the runtime, so both follow the same view)."""
        return self.store.view

    def refresh(self, min_interval: float | None = None) -> MetadataView:
        """:meth:`poll` (at most every ``min_interval``), then the current view."""
        self.poll(min_interval)
        return self.store.view

    def org(self, org_id: str) -> OrgState:
        """The state of ``org_id``; raises ``KeyError`` for an unknown organization."""
        if not self.ready:
            raise NotReadyError(self.status)
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
