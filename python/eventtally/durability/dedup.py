"""Opt-in deduplication of Segment events on ``messageId`` in a bounded window (docs/durability.md).

What this module guarantees:

- Bounded memory: at most ``max_ids`` ids are remembered (oldest evicted first), and none older
  than ``window`` seconds. An id costs about 85 bytes (a 64-bit hash in a ``set`` plus two 8-byte
  ring slots; measured in ``docs/durability.md``), so the default million ids hold about 85 MB.
- Ids are 64-bit hashes (Python's randomized ``hash`` of the string): two different ids are
  confused with probability about ``max_ids / 2**64`` per lookup; the raw strings are not kept.
- An id counts as seen once its batch is *committed* (logged and applied). :meth:`check_batch`
  reserves the new ids of a batch while it is in flight, so a concurrent copy of the same batch
  drops them, and :meth:`DedupVerdict` is aborted (ids released) when the batch fails, so Segment's
  retry of a refused batch is never dropped as a duplicate.
- Events and their ids are read by the engine's own batch grammar (``_core.message_ids``, the
  Rust scanner), so this module splits a batch into exactly the events the engine ingests.
- Filtering never changes a kept event's bytes: elements are cut out of the original bytes
  (``ARRAY_OF_EVENTS``, ``OBJECT_WITH_ARRAY_PROPERTY`` at its ``arrayPath``,
  ``NEWLINE_DELIMITED`` lines, ``SINGLE_OBJECT``). A body the engine would refuse, or an event
  without a ``messageId``, passes through untouched: the engine stays the judge of validity.
- The memory is per process: after a restart the window starts empty unless it is rebuilt from
  the WAL with :meth:`MessageIdDeduplicator.observe_batch` during replay.

It is off by default (the hosted service does not deduplicate either).
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eventtally import _core
from eventtally._safejson import MAX_DEPTH, TooDeepError, check_depth

__all__ = ["DedupStats", "DedupVerdict", "MessageIdDeduplicator", "message_id_hash"]

_SCHEMAS = {
    "ARRAY_OF_EVENTS": "ARRAY_OF_EVENTS",
    "NEWLINE_DELIMITED": "NEWLINE_DELIMITED",
    "NDJSON": "NEWLINE_DELIMITED",
    "OBJECT_WITH_ARRAY_PROPERTY": "OBJECT_WITH_ARRAY_PROPERTY",
    "SINGLE_OBJECT": "SINGLE_OBJECT",
}


def message_id_hash(message_id: object) -> int:
    """The 64-bit key of a ``messageId`` (a string, or any JSON value by its JSON text)."""
    if isinstance(message_id, str):
        return hash(message_id)
    return hash("\0" + json.dumps(message_id, sort_keys=True, default=str))


@dataclass(frozen=True, slots=True)
class DedupStats:
    """Counters since the deduplicator was created."""

    ids: int
    """Ids remembered now."""
    max_ids: int
    checked: int
    """Events looked at."""
    dropped: int
    """Events dropped as duplicates."""
    no_message_id: int
    """Events without a ``messageId`` (always kept)."""
    evicted: int
    """Ids forgotten to stay under ``max_ids``."""
    expired: int
    """Ids forgotten because they were older than ``window``."""
    unparsed: int
    """Batches passed through unfiltered because they did not parse."""


@dataclass(slots=True)
class DedupVerdict:
    """One batch's verdict: ``body`` is what to ingest and log (the very object passed in when
    nothing was dropped). When :attr:`empty`, every event was a duplicate: skip the ingest and
    answer 200."""

    body: bytes
    dropped: int
    kept: int
    """Events left in ``body`` (0 with ``parsed`` false: unknown, the engine decides)."""
    ids: tuple[int, ...] = ()
    """Hashes of the new ids this batch reserved (committed or released by the deduplicator)."""
    no_message_id: int = 0
    parsed: bool = True
    """False when the body could not be parsed here and passes through untouched."""
    state: str = field(default="pending")

    @property
    def empty(self) -> bool:
        """Every event of the batch was a duplicate: nothing is left to ingest."""
        return self.dropped > 0 and self.kept == 0


class _Unparsable(Exception):
    """Internal: the body is not something this module can filter."""


def _schema_of(schema: str | Mapping[str, Any]) -> tuple[str, str | None]:
    if isinstance(schema, Mapping):
        name = str(schema.get("schema", "ARRAY_OF_EVENTS"))
        array_path = schema.get("arrayPath")
    else:
        name, array_path = schema, None
    if name not in _SCHEMAS:
        raise ValueError(f"unknown ingest schema {name!r}")
    return _SCHEMAS[name], (str(array_path) if array_path is not None else None)


@dataclass(slots=True)
class _Parsed:
    """A body split into units (events or lines) with their ids, and how to rebuild it."""

    keys: list[int | None]  # per unit: hash of its messageId, None = keep unconditionally
    rebuild: Callable[[list[bool]], bytes]
    structural: int = 0  # units that are not events (NDJSON blank and bracket lines)


# Unit kinds of ``_core.message_ids``.
_STRUCTURAL, _NO_ID, _STR_ID, _JSON_ID = 0, 1, 2, 3


def _parse_body(body: bytes, schema: str, array_path: str | None) -> _Parsed:
    """Units and ids as the engine's batch grammar reads them (``_core.message_ids``): a body
    the engine would refuse is :class:`_Unparsable`."""
    if schema == "OBJECT_WITH_ARRAY_PROPERTY" and array_path is None:
        raise _Unparsable("OBJECT_WITH_ARRAY_PROPERTY needs the ingest's arrayPath")
    try:
        # Deeper bodies go to the engine undeduplicated (it refuses past 512), as documented
        # in docs/server.md: no real event nests 64 levels.
        check_depth(body, MAX_DEPTH)
    except TooDeepError:
        raise _Unparsable("nested too deep") from None
    got = _core.message_ids(body, schema, array_path)
    if got is None:
        raise _Unparsable("the engine would refuse this body")
    units, array = got
    keys: list[int | None] = []
    structural = 0
    for _, _, kind, value in units:
        if kind == _STR_ID:
            keys.append(hash(value))
        elif kind == _JSON_ID:
            keys.append(message_id_hash(json.loads(value)))  # type: ignore[arg-type]
        else:
            keys.append(None)
            structural += kind == _STRUCTURAL
    if schema == "SINGLE_OBJECT":
        return _Parsed(keys, lambda keep: body if keep[0] else b"")
    if schema == "NEWLINE_DELIMITED":

        def rebuild_lines(keep: list[bool]) -> bytes:
            return b"\n".join(body[a:b] for (a, b, _, _), k in zip(units, keep, strict=True) if k)

        return _Parsed(keys, rebuild_lines, structural)
    assert array is not None  # the array schemas report their array's span
    start, end = array

    def rebuild(keep: list[bool]) -> bytes:
        kept = b",".join(body[a:b] for (a, b, _, _), k in zip(units, keep, strict=True) if k)
        return body[:start] + b"[" + kept + b"]" + body[end:]

    return _Parsed(keys, rebuild)


class MessageIdDeduplicator:
    """Remembers recent ``messageId`` hashes: at most ``max_ids``, none older than ``window``
    seconds (``None``: no age limit). ``clock`` returns seconds (monotonic by default).
    Thread-safe."""

    def __init__(
        self,
        *,
        window: float | None = 3600.0,
        max_ids: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        if window is not None and window <= 0:
            raise ValueError("window must be positive (or None)")
        self.window = window
        self.max_ids = max_ids
        self._clock = clock
        self._lock = threading.Lock()
        self._set: set[int] = set()
        self._pending: set[int] = set()
        # A ring (oldest at _head) of hashes and the time each was committed; it grows by
        # doubling up to max_ids so an idle deduplicator costs nothing.
        self._ring = array("q", bytes(8 * min(max_ids, 1024)))
        self._times = array("d", bytes(8 * min(max_ids, 1024)))
        self._head = 0
        self._count = 0
        self._checked = self._dropped = self._no_id = 0
        self._evicted = self._expired = self._unparsed = 0

    # ------------------------------------------------------------------ ring

    def _grow(self) -> None:
        cap = len(self._ring)
        new_cap = min(cap * 2, self.max_ids)
        order = [(self._head + k) % cap for k in range(self._count)]
        ring = array("q", bytes(8 * new_cap))
        times = array("d", bytes(8 * new_cap))
        for k, j in enumerate(order):
            ring[k] = self._ring[j]
            times[k] = self._times[j]
        self._ring, self._times, self._head = ring, times, 0

    def _pop_oldest(self) -> None:
        self._set.discard(self._ring[self._head])
        self._head = (self._head + 1) % len(self._ring)
        self._count -= 1

    def _expire(self, now: float) -> None:
        if self.window is None:
            return
        horizon = now - self.window
        while self._count and self._times[self._head] < horizon:
            self._pop_oldest()
            self._expired += 1

    def _remember(self, h: int, now: float) -> None:
        if h in self._set:
            return
        if self._count == len(self._ring):
            if len(self._ring) < self.max_ids:
                self._grow()
            else:
                self._pop_oldest()
                self._evicted += 1
        slot = (self._head + self._count) % len(self._ring)
        self._ring[slot] = h
        self._times[slot] = now
        self._count += 1
        self._set.add(h)

    # ------------------------------------------------------------------ single ids

    def seen(self, message_id: object) -> bool:
        """Whether ``message_id`` was seen in the window; it is remembered either way."""
        h = message_id_hash(message_id)
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._checked += 1
            if h in self._set or h in self._pending:
                self._dropped += 1
                return True
            self._remember(h, now)
            return False

    def __contains__(self, message_id: object) -> bool:
        h = message_id_hash(message_id)
        with self._lock:
            self._expire(self._clock())
            return h in self._set or h in self._pending

    def __len__(self) -> int:
        with self._lock:
            return self._count

    # ------------------------------------------------------------------ batches

    def check_batch(self, body: bytes, schema: str | Mapping[str, Any]) -> DedupVerdict:
        """Drop the events of ``body`` whose ``messageId`` was seen or is in flight, reserve the
        new ones, and return the plan; :meth:`commit` or :meth:`abort` it (or use :meth:`batch`).

        ``schema`` is the ingest's schema name or its whole definition (``OBJECT_WITH_ARRAY_
        PROPERTY`` needs ``arrayPath``). Duplicates inside the batch are dropped too.
        """
        name, array_path = _schema_of(schema)
        try:
            parsed = _parse_body(bytes(body), name, array_path)
        except (_Unparsable, ValueError, RecursionError):
            with self._lock:
                self._unparsed += 1
            return DedupVerdict(body=body, dropped=0, kept=0, parsed=False)
        keep: list[bool] = []
        fresh: list[int] = []
        no_id = 0
        with self._lock:
            self._expire(self._clock())
            for h in parsed.keys:
                if h is None:
                    keep.append(True)
                    no_id += 1  # includes NDJSON structural lines, subtracted below
                elif h in self._set or h in self._pending:
                    keep.append(False)
                else:
                    keep.append(True)
                    self._pending.add(h)
                    fresh.append(h)
            dropped = keep.count(False)
            no_id -= parsed.structural
            self._checked += len(keep) - parsed.structural
            self._dropped += dropped
            self._no_id += no_id
        return DedupVerdict(
            body=body if not dropped else parsed.rebuild(keep),
            dropped=dropped,
            kept=len(keep) - dropped - parsed.structural,
            ids=tuple(fresh),
            no_message_id=no_id,
        )

    def commit(self, plan: DedupVerdict) -> None:
        """The batch was logged and applied: its new ids are now seen."""
        if plan.state != "pending":
            return
        with self._lock:
            now = self._clock()
            self._expire(now)
            for h in plan.ids:
                self._pending.discard(h)
                self._remember(h, now)
        plan.state = "committed"

    def abort(self, plan: DedupVerdict) -> None:
        """The batch was refused: release its ids so a retry is not dropped."""
        if plan.state != "pending":
            return
        with self._lock:
            for h in plan.ids:
                self._pending.discard(h)
        plan.state = "aborted"

    @contextmanager
    def batch(self, body: bytes, schema: str | Mapping[str, Any]) -> Iterator[DedupVerdict]:
        """``check_batch`` as a context: committed on normal exit, aborted on an exception."""
        plan = self.check_batch(body, schema)
        try:
            yield plan
        except BaseException:
            self.abort(plan)
            raise
        self.commit(plan)

    def filter_batch(self, body: bytes, schema: str | Mapping[str, Any]) -> tuple[bytes, int]:
        """``(body without already-seen events, number dropped)``, committing at once (for
        callers without a failure path; a server should prefer :meth:`batch`)."""
        plan = self.check_batch(body, schema)
        self.commit(plan)
        return plan.body, plan.dropped

    def observe_batch(self, body: bytes, schema: str | Mapping[str, Any]) -> int:
        """Remember every ``messageId`` of an already-accepted batch (rebuilding the window from
        the WAL after a restart); returns how many ids were new."""
        name, array_path = _schema_of(schema)
        try:
            parsed = _parse_body(bytes(body), name, array_path)
        except (_Unparsable, ValueError, RecursionError):
            return 0
        with self._lock:
            now = self._clock()
            self._expire(now)
            before = self._count
            for h in parsed.keys:
                if h is not None:
                    self._remember(h, now)
            return self._count - before

    def stats(self) -> DedupStats:
        """A consistent copy of the counters."""
        with self._lock:
            return DedupStats(
                ids=self._count,
                max_ids=self.max_ids,
                checked=self._checked,
                dropped=self._dropped,
                no_message_id=self._no_id,
                evicted=self._evicted,
                expired=self._expired,
                unparsed=self._unparsed,
            )
