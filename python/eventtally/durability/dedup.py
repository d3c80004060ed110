"""Opt-in deduplication of Segment events on ``messageId`` in a bounded window (docs/durability.md).

What this module guarantees:

- Bounded memory: at most ``max_ids`` ids are remembered (oldest evicted first), and none older
  than ``window`` seconds. An id costs about 85 bytes (a 64-bit hash in a ``set`` plus two 8-byte
  ring slots; measured in ``docs/durability.md``), so the default million ids hold about 85 MB.
- Ids are 64-bit hashes (Python's randomized ``hash`` of the string): two different ids are
  confused with probability about ``max_ids / 2**64`` per lookup; the raw strings are not kept.
- An id counts as seen once its batch is *committed* (logged and applied). :meth:`check_batch`
  reserves the new ids of a batch while it is in flight, so a concurrent copy of the same batch
  drops them, and :meth:`DedupPlan` is aborted (ids released) when the batch fails, so Segment's
  retry of a refused batch is never dropped as a duplicate.
- Filtering never changes a kept event's bytes: elements are cut out of the original text
  (``ARRAY_OF_EVENTS``, ``OBJECT_WITH_ARRAY_PROPERTY`` with a plain ``arrayPath``,
  ``NEWLINE_DELIMITED`` lines, ``SINGLE_OBJECT``). A body this module cannot parse, or an event
  without a ``messageId``, passes through untouched: the engine stays the judge of validity.
- The memory is per process: after a restart the window starts empty unless it is rebuilt from
  the WAL with :meth:`MessageIdDeduplicator.observe_batch` during replay.

It parses JSON in Python (``json``), several milliseconds per 300-event batch, which is why it is
off by default (the hosted service does not deduplicate either).
"""

from __future__ import annotations

import json
import re
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eventtally._safejson import MAX_DEPTH, TooDeepError, check_depth

__all__ = ["DedupPlan", "DedupStats", "MessageIdDeduplicator", "message_id_hash"]

_DEC = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_PATH_SEG = re.compile(
    r"""\.(?P<name>[A-Za-z_$][\w$]*)"""
    r"""|\[\s*(?:'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)"|(?P<idx>\d+))\s*\]"""
)
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
class DedupPlan:
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


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def _array_elements(text: str, start: int) -> tuple[list[tuple[int, int, Any]], int]:
    """Element spans and values of the JSON array at ``text[start] == '['``; end index."""
    i = _skip(text, start + 1)
    out: list[tuple[int, int, Any]] = []
    if text.startswith("]", i):
        return out, i + 1
    while True:
        value, end = _DEC.raw_decode(text, i)
        out.append((i, end, value))
        i = _skip(text, end)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith("]", i):
            return out, i + 1
        else:
            raise _Unparsable("bad array")


def _child_start(text: str, i: int, key: str | int) -> int:
    """Start of ``key``'s value in the object (last occurrence wins) or array at ``i``."""
    if isinstance(key, int):
        if not text.startswith("[", i):
            raise _Unparsable("not an array")
        elements, _ = _array_elements(text, i)
        if key >= len(elements):
            raise _Unparsable("index out of range")
        return elements[key][0]
    if not text.startswith("{", i):
        raise _Unparsable("not an object")
    i = _skip(text, i + 1)
    found = -1
    if text.startswith("}", i):
        raise _Unparsable("no such key")
    while True:
        name, i = _DEC.raw_decode(text, i)
        if not isinstance(name, str):
            raise _Unparsable("bad key")
        i = _skip(text, i)
        if not text.startswith(":", i):
            raise _Unparsable("bad object")
        i = _skip(text, i + 1)
        if name == key:
            found = i
        _, i = _DEC.raw_decode(text, i)
        i = _skip(text, i)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith("}", i):
            break
        else:
            raise _Unparsable("bad object")
    if found < 0:
        raise _Unparsable("no such key")
    return found


def _plain_path(path: str) -> list[str | int]:
    """``@.a['b'][0]`` -> ``['a', 'b', 0]``; :class:`_Unparsable` for anything fancier."""
    path = path.strip()
    if not path.startswith("@"):
        raise _Unparsable("arrayPath must start with @")
    out: list[str | int] = []
    i = 1
    while i < len(path):
        m = _PATH_SEG.match(path, i)
        if m is None:
            raise _Unparsable("arrayPath is not a plain path")
        if m.group("name") is not None:
            out.append(m.group("name"))
        elif m.group("idx") is not None:
            out.append(int(m.group("idx")))
        else:
            quoted = m.group("sq") if m.group("sq") is not None else m.group("dq")
            out.append(re.sub(r"\\(.)", r"\1", quoted))
        i = m.end()
    return out


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


def _parse_body(body: bytes, schema: str, array_path: str | None) -> _Parsed:
    try:
        # The parsers below recurse per level. Deeper bodies go to the engine undeduplicated
        # (it refuses past 512): no real event nests 64 levels, and the scan stays cheap.
        check_depth(body, MAX_DEPTH)
    except TooDeepError:
        raise _Unparsable("nested too deep") from None
    if schema == "NEWLINE_DELIMITED":
        return _parse_ndjson(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unparsable("not UTF-8") from None
    start = _skip(text, 1 if text.startswith("\ufeff") else 0)
    if schema == "SINGLE_OBJECT":
        value, end = _DEC.raw_decode(text, start)
        if _skip(text, end) != len(text):
            raise _Unparsable("trailing data")
        return _Parsed([_key(value)], lambda keep: body if keep[0] else b"")
    if schema == "OBJECT_WITH_ARRAY_PROPERTY":
        if array_path is None:
            raise _Unparsable("OBJECT_WITH_ARRAY_PROPERTY needs the ingest's arrayPath")
        for part in _plain_path(array_path):
            start = _child_start(text, start, part)
    if not text.startswith("[", start):
        raise _Unparsable("not an array")
    elements, end = _array_elements(text, start)
    if schema == "ARRAY_OF_EVENTS" and _skip(text, end) != len(text):
        raise _Unparsable("trailing data")

    def rebuild(keep: list[bool]) -> bytes:
        kept = ",".join(text[a:b] for (a, b, _), k in zip(elements, keep, strict=True) if k)
        return (text[:start] + "[" + kept + "]" + text[end:]).encode("utf-8")

    return _Parsed([_key(v) for _, _, v in elements], rebuild)


def _parse_ndjson(body: bytes) -> _Parsed:
    lines = body.split(b"\n")
    keys: list[int | None] = []
    structural = 0
    for line in lines:
        stripped = line.strip()
        if stripped.endswith(b","):
            stripped = stripped[:-1].rstrip()
        if stripped in (b"", b"[", b"]"):
            keys.append(None)
            structural += 1
            continue
        try:
            keys.append(_key(json.loads(stripped)))
        except (ValueError, RecursionError):
            raise _Unparsable("bad line") from None

    def rebuild(keep: list[bool]) -> bytes:
        return b"\n".join(line for line, k in zip(lines, keep, strict=True) if k)

    return _Parsed(keys, rebuild, structural)


def _key(event: object) -> int | None:
    if not isinstance(event, dict) or "messageId" not in event:
        return None
    mid = event["messageId"]
    return None if mid is None else message_id_hash(mid)


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

    def check_batch(self, body: bytes, schema: str | Mapping[str, Any]) -> DedupPlan:
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
            return DedupPlan(body=body, dropped=0, kept=0, parsed=False)
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
        return DedupPlan(
            body=body if not dropped else parsed.rebuild(keep),
            dropped=dropped,
            kept=len(keep) - dropped - parsed.structural,
            ids=tuple(fresh),
            no_message_id=no_id,
        )

    def commit(self, plan: DedupPlan) -> None:
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

    def abort(self, plan: DedupPlan) -> None:
        """The batch was refused: release its ids so a retry is not dropped."""
        if plan.state != "pending":
            return
        with self._lock:
            for h in plan.ids:
                self._pending.discard(h)
        plan.state = "aborted"

    @contextmanager
    def batch(self, body: bytes, schema: str | Mapping[str, Any]) -> Iterator[DedupPlan]:
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
