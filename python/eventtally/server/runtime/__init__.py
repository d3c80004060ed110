"""Organization engines, write-ahead logging, snapshots, crash recovery and backfill.

:class:`Runtime` is built in layers, one module each, every layer on top of the one before:

============== ===========================================================================
``base``        the shared fields (no behaviour)
``telemetry``   the Prometheus metrics
``snapshots``   capture, durable write and log truncation of organization snapshots
``engines``     one engine per organization, kept in step with the metadata
``recovery``    ``open``: lock, newest valid snapshot + the log after it, ready
``ingest``      prepare → log → apply of one batch
``maintenance`` compaction, the background thread, ``close``
``backfill``    filters applied to batches they never saw; offline snapshots merged
============== ===========================================================================

Guarantees (each module states its own in detail):
- One :class:`eventtally.Engine` per organization holds all its ingests and filters; the engines
  follow the metadata (:meth:`Runtime.sync`).
- A batch is durable (per the fsync policy) before it is applied and before the caller answers
  200; a batch the log refuses is not applied, and the caller answers 503.
- A snapshot tagged ``wal_seq`` holds exactly the organization's records numbered
  ``<= wal_seq``, so replay never double-counts; definition changes are snapshotted before any
  batch sees them.
- :meth:`Runtime.open` recovers before it sets :attr:`Runtime.ready`; :meth:`Runtime.close`
  fsyncs the log, snapshots every changed organization and releases the data directory.
- :meth:`Runtime.write_refusal` says why ingest would answer 503 right now (``/readyz``).
"""

from __future__ import annotations

from ..errors import (
    BackfillError,
    BatchNotLoggedError,
    DefinitionsPendingError,
    NotReadyError,
    RepeatedBackfillError,
    StateLimitError,
)
from .backfill import RuntimeBackfill, parse_time_ms
from .state import BackfillResult, OrgState, RWGate

__all__ = [
    "BackfillError",
    "BackfillResult",
    "BatchNotLoggedError",
    "DefinitionsPendingError",
    "NotReadyError",
    "OrgState",
    "RWGate",
    "RepeatedBackfillError",
    "Runtime",
    "StateLimitError",
    "parse_time_ms",
]


class Runtime(RuntimeBackfill):
    """All organizations' engines, kept in step with a
    :class:`~eventtally.server.metadata.MetadataStore`, made durable by
    :class:`~eventtally.server.storage.Storage`.  Call :meth:`open` before serving."""
