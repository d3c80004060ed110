"""Per-organization token-bucket rate limiting for the ingest endpoint.

Guarantees:
- Each organization has its own bucket: ``rate`` tokens per second, at most ``burst`` stored
  (default: one second's worth).  One accepted request costs one token.
- A refused request costs nothing and learns how long to wait: :meth:`RateLimiter.acquire`
  returns the seconds until a token is available, which the server sends as ``Retry-After``
  (rounded up to whole seconds, at least 1, as HTTP requires).
- A rate of ``0`` disables limiting.  Thread-safe; O(1) per call.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "retry_after_header"]


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now


class RateLimiter:
    """Token buckets keyed by organization id."""

    def __init__(
        self,
        rate: float = 1000.0,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, org_id: str, rate: float | None = None) -> float:
        """Take a token for ``org_id``: 0.0 if allowed, else the seconds to wait.

        ``rate`` overrides the default rate for this organization (from its metadata).
        """
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        burst = max(1.0, self.burst if self.burst is not None else rate)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(org_id)
            if bucket is None or bucket.rate != rate or bucket.burst != burst:
                bucket = self._buckets[org_id] = _Bucket(rate, burst, now)
            else:
                bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
                bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate


def retry_after_header(wait: float) -> str:
    """``Retry-After`` value for a wait in seconds: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait)))
