"""The fields every part of :class:`~eventtally.server.runtime.Runtime` shares.

Guarantees:
- :class:`RuntimeBase` only builds the runtime's state (no engine, no file is opened); each
  module of this package adds one concern on top of it, in the order of ``runtime/__init__.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import eventtally
from eventtally.durability import RecoveryReport

from ..config import DurabilityConfig
from ..metadata import MetadataStore, MetadataView
from ..metrics import Registry
from ..storage import Storage
from .state import OrgState

log = logging.getLogger("eventtally.server")


class RuntimeBase:
    """The runtime's state.  The rest of the package adds behaviour; use :class:`Runtime`."""

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
        compaction_nice: int = 0,
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
        #: nice increment of the background compaction thread (``maintenance.py``)
        self.compaction_nice = compaction_nice
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
        self._synced: MetadataView | None = None
        self._last_poll = 0.0
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._compact_thread: threading.Thread | None = None
        self._generation = 0  # snapshot numbers when the WAL is off
        self._gen_lock = threading.Lock()
        self._init_metrics()

    def _init_metrics(self) -> None:
        """Register the runtime's metrics (``telemetry.py``)."""
        raise NotImplementedError
