"""Fair request slots: how many ingest and read requests are in flight, per organization.

Guarantees:
- Two pools: ``ingest`` (``max_concurrent_requests``) and ``read`` (``max_concurrent_reads``);
  a limit of ``0`` means no limit.  A request in one pool never waits for the other.
- Within a pool an organization holds at most ``ceil(limit x org_slot_share)`` slots, so one
  organization (for example one trickling 64 uploads) leaves the rest free for the others.
- :meth:`Slots.try_acquire` never blocks: ``False`` means answer 503 with ``Retry-After``.
  Each successful acquire is matched by exactly one :meth:`Slots.release`; :attr:`in_flight`
  counts the held slots (the ``eventtally_http_requests_in_flight`` gauge).
- ``org=None`` (a front that cannot name the organization before the app runs) counts against
  the pool limit only.
"""

from __future__ import annotations

import math
import threading
from typing import Literal

__all__ = ["Pool", "Slots"]

Pool = Literal["ingest", "read"]


class _Pool:
    __slots__ = ("held", "limit", "org_cap", "total")

    def __init__(self, limit: int, share: float) -> None:
        self.limit = limit
        self.org_cap = max(1, min(limit, math.ceil(limit * share))) if limit else 0
        self.total = 0
        self.held: dict[str, int] = {}


class Slots:
    """Thread-safe slot accounting for the two pools."""

    def __init__(self, ingest: int, reads: int, org_share: float = 1.0) -> None:
        if not 0 < org_share <= 1:
            raise ValueError("org_share must be in (0, 1]")
        self._lock = threading.Lock()
        self._pools: dict[str, _Pool] = {
            "ingest": _Pool(ingest, org_share),
            "read": _Pool(reads, org_share),
        }

    def org_cap(self, pool: Pool) -> int:
        """Slots one organization may hold in ``pool`` (``0``: no limit)."""
        return self._pools[pool].org_cap

    def try_acquire(self, pool: Pool, org: str | None) -> bool:
        p = self._pools[pool]
        with self._lock:
            if p.limit and p.total >= p.limit:
                return False
            if org is not None:
                n = p.held.get(org, 0)
                if p.org_cap and n >= p.org_cap:
                    return False
                p.held[org] = n + 1
            p.total += 1
            return True

    def release(self, pool: Pool, org: str | None) -> None:
        p = self._pools[pool]
        with self._lock:
            p.total -= 1
            if org is not None:
                n = p.held[org] - 1
                if n:
                    p.held[org] = n
                else:
                    del p.held[org]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(p.total for p in self._pools.values())

    def held_by(self, pool: Pool, org: str) -> int:
        with self._lock:
            return self._pools[pool].held.get(org, 0)
