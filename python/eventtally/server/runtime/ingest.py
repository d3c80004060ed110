"""Ingest: prepare, log, apply one batch under the organization's shared gate.

Guarantees:
- A batch is ingested as ``prepare`` → ``wal.append`` → ``apply`` under the organization's
  shared gate, so it is durable (per the fsync policy) before it is applied and before the
  caller answers 200.  A batch the log refuses (:class:`BatchNotLoggedError`) is not applied.
- The state-size limit is checked before the append, so a refused batch is never in the log.
- With deduplication on, the batch's duplicates are dropped before it is logged, and the
  messageIds it adds are remembered only once it is applied.
"""

from __future__ import annotations

import logging

import eventtally
from eventtally.durability import WalRecord, to_ms

from ..errors import (
    BatchNotLoggedError,
    DefinitionsPendingError,
    NotReadyError,
    StateLimitError,
)
from ..metadata import IngestRecord
from .recovery import RuntimeRecovery
from .state import OrgState

log = logging.getLogger("eventtally.server")

_EMPTY_STATS = eventtally.IngestStats(events=0, accepted=0)


class RuntimeIngest(RuntimeRecovery):
    """Takes batches."""

    def ingest(
        self, ingest: IngestRecord, body: bytes, *, received_at: float | None = None
    ) -> eventtally.IngestStats:
        """Prepare, log, apply one batch into ``ingest`` (the record the caller resolved; it is
        not looked up again); returns the engine's ``IngestStats``.

        Raises the engine's errors (``JsonError``, ``FormatError``, ...) before anything is
        logged or applied; :class:`StateLimitError` when the organization is over its limit;
        :class:`DefinitionsPendingError` while its definitions wait for a snapshot;
        :class:`BatchNotLoggedError` (an ``OSError``) when the log cannot persist the batch (it
        is then not applied).
        """
        org_id, ingest_id = ingest.org_id, ingest.id
        st = self.org(org_id)
        if self.closed:
            raise NotReadyError("shutting down")
        if st.needs_snapshot:
            self.m_refused.inc(org_id, "snapshot_pending")
            raise DefinitionsPendingError("the organization's definitions are not persisted yet")
        if self.max_state_bytes:
            used = st.engine.state_bytes()
            if used >= self.max_state_bytes:
                self.m_refused.inc(org_id, "state_limit")
                raise StateLimitError(org_id, used, self.max_state_bytes)
        ms = to_ms(self.clock() if received_at is None else received_at)
        dedup = self.storage.dedup
        #: the batch without its duplicates, and the messageIds to remember once it is applied
        unseen = None
        if dedup is not None:
            unseen = dedup.check_batch(body, ingest.definition)
            if unseen.dropped:
                self.m_dedup.inc(org_id, amount=unseen.dropped)
            body = unseen.body
        try:
            if unseen is not None and unseen.empty:
                stats = _EMPTY_STATS
            else:
                stats = self._ingest_logged(st, org_id, ingest_id, body, ms)
        except BaseException:
            if unseen is not None:
                dedup.abort(unseen)  # type: ignore[union-attr]
            raise
        if unseen is not None:
            dedup.commit(unseen)  # type: ignore[union-attr]
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
                except OSError as exc:
                    self.m_refused.inc(org_id, "wal_error")
                    raise BatchNotLoggedError(str(exc)) from exc
            stats = st.engine.apply(prepared)
            st.dirty = True
        return stats
