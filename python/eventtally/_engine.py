"""The typed public face of the compiled engine.

Guarantees: inputs are validated and converted here or in Rust before any state changes; a batch
is applied whole or not at all; the GIL is released while batches are parsed, evaluated and
merged, so threads ingesting into one engine run in parallel. numpy is imported only where
arrays are made (``Engine.results_arrays``), so importing the engine does not load it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from eventtally import _core
from eventtally.exceptions import JsonError


class _ImportedOnFirstUse:
    """Stands for a module until an attribute of it is read, then imports the module (once:
    later reads find it in ``sys.modules``). Not put in ``sys.modules`` itself, so nothing
    else sees a half-loaded module."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    # numpy costs more to import than the rest of the package; only ``results_arrays`` and
    # the annotations below need it (``typing.get_type_hints`` resolves those through these).
    np = _ImportedOnFirstUse("numpy")
    npt = _ImportedOnFirstUse("numpy.typing")

__all__ = ["Engine", "IngestStats", "PreparedBatch", "ResultArrays"]

Clock = Callable[[], float]
BatchData = bytes | bytearray | memoryview | str
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class IngestStats:
    """What one batch (or file) did: events seen, accepted, and dropped by reason."""

    events: int
    accepted: int
    dropped: dict[str, int] = field(default_factory=dict)
    timestamp_fallback: int = 0
    per_filter: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def _from_core(cls, raw: Mapping[str, Any]) -> IngestStats:
        return cls(
            events=raw["events"],
            accepted=raw["accepted"],
            dropped=dict(raw["dropped"]),
            timestamp_fallback=raw["timestamp_fallback"],
            per_filter={k: dict(v) for k, v in raw["per_filter"].items()},
        )

    def to_dict(self) -> JsonDict:
        """The stats as plain JSON-ready data."""
        return {
            "events": self.events,
            "accepted": self.accepted,
            "dropped": dict(self.dropped),
            "timestamp_fallback": self.timestamp_fallback,
            "per_filter": {k: dict(v) for k, v in self.per_filter.items()},
        }


@dataclass(frozen=True)
class ResultArrays:
    """A query answer as columns.

    ``dt`` (``datetime64[ms]``), ``values`` (``float64``) and ``codes`` (``uint32``, the row's
    grouping tuple, in ascending order of the tuples' values) are moved out of Rust without a
    copy; ``dt`` is a zero-copy view of the int64 milliseconds. Each ``groupings[key]`` is an
    ``object`` array built by indexing that key's small array of distinct values with per-row
    codes: rows share the distinct ``str`` objects (no string is created per row, and no row is
    padded to the longest value); that indexing is the one copy made.
    """

    dt: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]
    groupings: dict[str, npt.NDArray[np.object_]]
    codes: npt.NDArray[np.uint32]
    _key_values: list[list[str]] = field(repr=False, default_factory=list)
    _tuple_codes: list[npt.NDArray[np.uint32]] = field(repr=False, default_factory=list)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def tuples(self) -> list[list[str]]:
        """The distinct grouping tuples; ``tuples[codes[i]]`` are row ``i``'s values (built on
        demand, one Python list per tuple)."""
        if not self._key_values:
            # No grouping is returned: every row belongs to the one empty tuple.
            return [[]] if len(self.codes) else []
        columns = [
            [values[c] for c in codes.tolist()]
            for values, codes in zip(self._key_values, self._tuple_codes, strict=True)
        ]
        return [list(t) for t in zip(*columns, strict=True)]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with ``dt``, one column per grouping and ``value``."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from exc
        columns: dict[str, Any] = {"dt": self.dt}
        columns.update(self.groupings)
        columns["value"] = self.values
        return pd.DataFrame(columns)

    def to_arrow(self) -> Any:
        """A ``pyarrow.Table`` with ``dt``, one column per grouping and ``value``."""
        try:
            import pyarrow as pa
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_arrow() needs pyarrow: pip install pyarrow") from exc
        columns: dict[str, Any] = {"dt": self.dt}
        columns.update(self.groupings)
        columns["value"] = self.values
        return pa.table(columns)


class PreparedBatch:
    """A batch parsed and evaluated but not applied (see ``Engine.prepare``)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: _core.PreparedBatch) -> None:
        self._inner = inner

    @property
    def stats(self) -> IngestStats:
        """The stats the batch reports when applied (if the filters do not change meanwhile)."""
        return IngestStats._from_core(self._inner.stats())


def _now_ms(clock: Clock, received_at: float | None, received_ms: int | None = None) -> int:
    # Floored like timestamp values, so a clock reading and an equal event time share a bucket.
    if received_ms is not None:
        if received_at is not None:
            raise TypeError("pass received_at (seconds) or received_ms, not both")
        if not isinstance(received_ms, int) or isinstance(received_ms, bool):
            raise TypeError("received_ms must be an int (Unix milliseconds)")
        return received_ms
    seconds = clock() if received_at is None else received_at
    return math.floor(seconds * 1000)


_T = TypeVar("_T")


def _with_text_errors(
    call: Callable[[BatchData, str | None, int], _T],
    data: BatchData,
    ingest_id: str | None,
    now_ms: int,
) -> _T:
    """Runs ``call``; a ``str`` that is not valid Unicode (a lone surrogate) becomes a
    ``JsonError`` at its UTF-8 byte offset, like invalid UTF-8 in bytes."""
    try:
        return call(data, ingest_id, now_ms)
    except UnicodeEncodeError as exc:
        if not isinstance(data, str):
            raise
        offset = len(data[: exc.start].encode("utf-8"))
        reason = "invalid UTF-8: lone surrogate in str input"
        message = f"malformed JSON at byte {offset}: {reason}"
        raise JsonError(message, offset=offset, reason=reason) from exc


def _dumps(value: object, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable: {exc}") from exc


class Engine:
    """Aggregates event batches into time-bucketed, per-grouping metrics.

    ``ingest``: one ingest definition or a list of them (the first is the default).
    ``filters``: filter definitions (spec 5.7). ``clock``: returns the current Unix time in
    seconds; it dates events that use the ingest time and decides which intervals are incomplete.
    Engines are thread-safe.
    """

    __slots__ = ("_clock", "_inner")

    def __init__(
        self,
        ingest: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        filters: Iterable[Mapping[str, Any]] = (),
        *,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(ingest, Mapping | list | tuple):
            raise TypeError("ingest must be a dict or a list of dicts")
        filters = list(filters)
        self._clock: Clock = clock or time.time
        self._inner = _core.Engine(_dumps(ingest, "ingest"), _dumps(filters, "filters"))

    @classmethod
    def _wrap(cls, inner: _core.Engine, clock: Clock | None) -> Engine:
        engine = cls.__new__(cls)
        engine._clock = clock or time.time
        engine._inner = inner
        return engine

    # -- ingest --------------------------------------------------------------------------

    def ingest(
        self,
        data: BatchData,
        *,
        ingest_id: str | None = None,
        received_at: float | None = None,
        received_ms: int | None = None,
    ) -> IngestStats:
        """Ingests one batch in the ingest's format, atomically.

        The ingest time (for events timestamped at ingest, and the fallback) is ``received_at``
        (Unix seconds) or ``received_ms`` (Unix milliseconds, taken exactly, as the write-ahead
        log stores it), else the clock. Raises ``JsonError`` or ``FormatError`` for a bad batch
        (nothing is applied).
        """
        raw = _with_text_errors(
            self._inner.ingest, data, ingest_id, _now_ms(self._clock, received_at, received_ms)
        )
        return IngestStats._from_core(raw)

    def prepare(
        self,
        data: BatchData,
        *,
        ingest_id: str | None = None,
        received_at: float | None = None,
        received_ms: int | None = None,
    ) -> PreparedBatch:
        """Parses and evaluates a batch without touching the state (raises on a bad batch);
        the ingest time is chosen as for ``ingest``."""
        inner = _with_text_errors(
            self._inner.prepare, data, ingest_id, _now_ms(self._clock, received_at, received_ms)
        )
        return PreparedBatch(inner)

    def apply(self, prepared: PreparedBatch) -> IngestStats:
        """Applies a prepared batch; ``ingest(x)`` is ``apply(prepare(x))``."""
        if not isinstance(prepared, PreparedBatch):
            raise TypeError("apply() takes a PreparedBatch from prepare()")
        return IngestStats._from_core(self._inner.apply(prepared._inner))

    def ingest_file(
        self,
        path: str | os.PathLike[str],
        *,
        ingest_id: str | None = None,
        received_at: float | None = None,
        progress: Callable[[int, int], object] | None = None,
        threads: int | None = None,
    ) -> IngestStats:
        """Ingests a ``.json``, ``.ndjson`` or ``.jsonl`` file, optionally ``.gz``, in bounded
        memory. ``progress(bytes_read, file_size)`` is called after each chunk. Atomic.

        With ``threads`` above 1, a large uncompressed NDJSON or JSON array file is split into
        ranges of whole records parsed in parallel (``ingest_files([path], threads=...)``;
        progress is then reported as there). The file is read through a reused buffer, not
        mapped; one truncated while it is read fails with ``EventtallyIOError``."""
        if threads is not None and threads != 1:
            return self.ingest_files(
                [path],
                threads=threads,
                progress=progress,
                ingest_id=ingest_id,
                received_at=received_at,
            )
        raw = self._inner.ingest_file(
            os.fspath(path), ingest_id, _now_ms(self._clock, received_at), progress
        )
        return IngestStats._from_core(raw)

    def ingest_file_bytes(
        self,
        data: bytes | bytearray | memoryview,
        name: str,
        *,
        ingest_id: str | None = None,
        received_at: float | None = None,
    ) -> IngestStats:
        """Ingests the raw bytes of one whole file, e.g. fetched from object storage, exactly as
        ``ingest_file`` reads a file on disk: ``name`` decides the kind (``.json``,
        ``.ndjson``/``.jsonl``, optionally ``.gz``, decompressed in Rust) and is the file that
        error messages name. Atomic."""
        if isinstance(data, str):
            raise TypeError("ingest_file_bytes() takes the file's bytes, not str")
        raw = self._inner.ingest_file_bytes(
            data, name, ingest_id, _now_ms(self._clock, received_at)
        )
        return IngestStats._from_core(raw)

    def ingest_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        threads: int | None = None,
        progress: Callable[[int, int], object] | None = None,
        ingest_id: str | None = None,
        received_at: float | None = None,
    ) -> IngestStats:
        """Ingests many ``.json``/``.ndjson``/``.jsonl`` files (optionally ``.gz``) on
        ``threads`` worker threads, every core by default, in Rust without the GIL.

        Each worker folds whole files (or ranges of whole records of a large uncompressed
        NDJSON or JSON array file) into a partial state of its own; the partial states are
        merged exactly, so the result equals ingesting the files one by one. Memory per worker
        is a reused read buffer (about 8 MiB) plus its partial state, never a whole file. All
        or nothing: on an error (``JsonError``/``FormatError`` naming the file and the byte
        offset into the decompressed file, ``EventtallyIOError``) nothing is applied.

        ``progress(bytes_read, total_bytes)`` (file sizes on disk) is called on the calling
        thread, with the GIL, about every 100 ms and once at the end; an exception it raises
        stops the work, applies nothing and propagates.
        """
        if isinstance(paths, str | bytes | os.PathLike):
            raise TypeError("ingest_files() takes a list of paths; use ingest_file() for one")
        names = [os.fspath(p) for p in paths]
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)):
            raise TypeError("threads must be an int or None")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        raw = self._inner.ingest_files(
            names, ingest_id, _now_ms(self._clock, received_at), threads, progress
        )
        return IngestStats._from_core(raw)

    # -- queries -------------------------------------------------------------------------

    def results(self, query: Mapping[str, Any]) -> list[JsonDict]:
        """Answers a Metrics API request (spec 7.2) as ``{"dt", "groupings", "value"}`` rows."""
        text = self._inner.results_json(_dumps(query, "query"), _now_ms(self._clock, None))
        rows: list[JsonDict] = json.loads(text)
        return rows

    def results_arrays(self, query: Mapping[str, Any]) -> ResultArrays:
        """Answers a Metrics API request as numpy columns (see ``ResultArrays``)."""
        dt, codes, values, keys, key_values, row_codes, tuple_codes, _grouped = (
            self._inner.results_arrays(_dumps(query, "query"), _now_ms(self._clock, None))
        )
        groupings: dict[str, npt.NDArray[np.object_]] = {}
        for key, distinct, rows in zip(keys, key_values, row_codes, strict=True):
            table = np.empty(max(len(distinct), 1), dtype=object)
            table[: len(distinct)] = distinct
            groupings[key] = table[rows]
        return ResultArrays(
            dt=dt.view("datetime64[ms]"),
            values=values,
            groupings=groupings,
            codes=codes,
            _key_values=key_values,
            _tuple_codes=tuple_codes,
        )

    def results_multi(self, queries: Sequence[Mapping[str, Any]]) -> list[JsonDict]:
        """The compact rows of ``POST /metrics/results?multi=true`` (spec 7.3)."""
        text = self._inner.results_multi_json(
            _dumps(list(queries), "queries"), _now_ms(self._clock, None)
        )
        rows: list[JsonDict] = json.loads(text)
        return rows

    def answer_json(
        self,
        kind: str,
        body: BatchData,
        *,
        max_rows: int = 0,
        max_bytes: int = 0,
        chunk_bytes: int = 1 << 20,
    ) -> list[bytes] | None:
        """The Metrics API answer text for a raw request body, as the server sends it.

        ``kind`` is ``"results"`` (spec 7.2: ``body`` is one query object), ``"multi"``
        (7.3: an object or an array of objects) or ``"groupings"`` (7.4). The text is the
        compact JSON of ``results``/``results_multi``/``groupings`` (``json.dumps`` with
        ``separators=(",", ":")``, ``ensure_ascii=False``), in chunks of about ``chunk_bytes``,
        written by the core without a Python object per row. ``max_rows`` and ``max_bytes`` cap
        the answer (``0``: no cap; past one, ``LimitError``). ``None`` when ``body`` is not strict
        JSON of the expected shape (the caller decides what it is). Bodies nested too deep raise
        ``JsonError``; invalid queries raise like ``results``.
        """
        status, chunks, _length = self._inner.answer(
            kind, body, _now_ms(self._clock, None), max_rows, max_bytes, chunk_bytes
        )
        return chunks if status == 0 else None

    def groupings(self, query: Mapping[str, Any]) -> list[JsonDict]:
        """Distinct values of ``query["groupingName"]`` in the window (spec 7.4)."""
        rows: list[JsonDict] = json.loads(self._inner.groupings_json(_dumps(query, "query")))
        return rows

    # -- definitions ---------------------------------------------------------------------

    def filter_definitions(self) -> list[JsonDict]:
        """Every filter as spec 5.7 JSON."""
        defs: list[JsonDict] = json.loads(self._inner.filter_definitions_json())
        return defs

    def ingest_definitions(self) -> list[JsonDict]:
        """Every ingest definition."""
        defs: list[JsonDict] = json.loads(self._inner.ingest_definitions_json())
        return defs

    def add_filter(self, definition: Mapping[str, Any]) -> None:
        """Adds a filter (validated like the constructor); it sees events from now on."""
        self._inner.add_filter(_dumps(definition, "filter"))

    def remove_filter(self, filter_id: str) -> None:
        """Removes a filter and its state."""
        self._inner.remove_filter(filter_id)

    def add_ingest(self, definition: Mapping[str, Any]) -> None:
        """Adds an ingest definition."""
        self._inner.add_ingest(_dumps(definition, "ingest"))

    def remove_ingest(self, ingest_id: str) -> None:
        """Removes an ingest definition."""
        self._inner.remove_ingest(ingest_id)

    # -- snapshots -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A versioned, checksummed snapshot of definitions and state."""
        return self._inner.to_bytes()

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, clock: Clock | None = None
    ) -> Engine:
        """Rebuilds an engine from ``to_bytes()``; raises ``SnapshotError`` when corrupt."""
        return cls._wrap(_core.Engine.from_bytes(data), clock)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a snapshot atomically (temporary file, fsync, rename, fsync of the directory;
        the file is ``0600``)."""
        # Imported here: the engine is importable without the server's durability package.
        from eventtally.durability.files import atomic_write

        atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> Engine:
        """Loads a snapshot written by ``save``."""
        with open(path, "rb") as fh:
            return cls.from_bytes(fh.read(), clock=clock)

    def __reduce__(self) -> tuple[Callable[[bytes, Clock], Engine], tuple[bytes, Clock]]:
        """Pickles as the versioned snapshot bytes (definitions and state) plus the clock, so
        an engine crosses processes (``multiprocessing``, Dask, Ray, Spark). The clock must be
        picklable itself: the default ``time.time`` is; a lambda is not."""
        return (_from_pickle, (self.to_bytes(), self._clock))

    def merge(self, other: Engine) -> None:
        """Adds ``other``'s state into this engine; the filter definitions must be equal."""
        if not isinstance(other, Engine):
            raise TypeError("merge() takes another Engine")
        self._inner.merge(other._inner)

    def drop_before(self, horizon: float, *, filter_id: str | None = None) -> int:
        """Retention: drops buckets starting before ``horizon`` (Unix seconds); returns the
        number of cells dropped."""
        horizon_ms = min(max(math.floor(horizon * 1000), -(2**63)), 2**63 - 1)
        return self._inner.drop_before(horizon_ms, filter_id)

    def state_bytes(self) -> int:
        """Approximate memory held by the aggregates, in bytes."""
        return self._inner.state_bytes()

    # -- retention -----------------------------------------------------------------------

    def compact(
        self,
        now: float | None = None,
        *,
        default_retention: Sequence[Mapping[str, Any]] | None = None,
    ) -> JsonDict:
        """Moves every bucket older than its retention tier keeps into the next tier, merging
        cells exactly, and drops data past the last tier (decision 13).

        ``now`` is Unix seconds (default: the engine's clock). ``default_retention`` is the
        tier list for filters without a ``retention`` of their own (fitted to each filter's
        interval, see ``docs/python-api.md``). Returns ``cells_merged``, ``cells_dropped``,
        ``groups_released``, ``bytes_freed``, ``filters`` (compacted), ``skipped``, and
        ``batches_deferred`` / ``batches_refused``: batches that arrived while a step held the
        state lock were queued and applied by the step (refused: a counter would have
        overflowed), see ``docs/python-api.md``.
        """
        now_ms = _now_ms(self._clock, now)
        default = None if default_retention is None else _dumps(default_retention, "retention")
        report: JsonDict = json.loads(self._inner.compact(now_ms, default))
        return report

    def resolutions(self, query: Mapping[str, Any]) -> list[JsonDict]:
        """The resolutions that answer ``query``'s window, finest first: one
        ``{"intervalType", "intervalCount", "startTime", "endTime"}`` per tier whose range meets
        the window (``None`` = open end). See ``docs/queries.md``."""
        rows: list[JsonDict] = json.loads(self._inner.resolutions_json(_dumps(query, "query")))
        return rows

    def tier_usage(self) -> dict[str, list[JsonDict]]:
        """Per filter, per retention tier: ``tier``, ``intervalType``, ``intervalCount``,
        ``rows`` and approximate ``bytes``."""
        usage: dict[str, list[JsonDict]] = json.loads(self._inner.tier_usage_json())
        return usage


def _from_pickle(data: bytes, clock: Clock) -> Engine:
    """Unpickles an ``Engine`` (see ``Engine.__reduce__``); the bytes are validated like any
    snapshot."""
    return Engine.from_bytes(data, clock=clock)
