"""Private compiled core of eventtally (Rust, pyo3). Use ``eventtally.Engine`` instead.

Every method that processes data releases the GIL. Errors are raised as the classes of
``eventtally.exceptions``.
"""

from collections.abc import Callable
from typing import final

import numpy as np
import numpy.typing as npt

__all__ = [
    "SNAPSHOT_FORMAT_VERSION",
    "Engine",
    "PreparedBatch",
    "crc32",
    "message_ids",
]

SNAPSHOT_FORMAT_VERSION: int

@final
class PreparedBatch:
    """A batch parsed and evaluated against a plan, not yet applied (applies once)."""

    def stats(self) -> dict[str, object]:
        """Stats the batch reports when applied."""

@final
class Engine:
    """Compiled plan plus columnar state; thread-safe (frozen, inner locks)."""

    def __new__(cls, ingests_json: str, filters_json: str) -> Engine:
        """Builds and validates an engine from JSON definitions."""
    def prepare(
        self, data: bytes | bytearray | memoryview | str, ingest_id: str | None, now_ms: int
    ) -> PreparedBatch:
        """Parses and evaluates a batch without touching the state."""
    def apply(self, prepared: PreparedBatch) -> dict[str, object]:
        """Merges a prepared batch into the state; returns its stats."""
    def ingest(
        self, data: bytes | bytearray | memoryview | str, ingest_id: str | None, now_ms: int
    ) -> dict[str, object]:
        """``apply(prepare(...))`` in one call."""
    def ingest_file(
        self,
        path: str,
        ingest_id: str | None,
        now_ms: int,
        progress: Callable[[int, int], object] | None = None,
    ) -> dict[str, object]:
        """Ingests a .json/.ndjson/.jsonl file, optionally gzipped, in bounded memory."""
    def ingest_files(
        self,
        paths: list[str],
        ingest_id: str | None,
        now_ms: int,
        threads: int | None = None,
        progress: Callable[[int, int], object] | None = None,
    ) -> dict[str, object]:
        """Ingests many files on worker threads without the GIL; all or nothing."""
    def ingest_file_bytes(
        self,
        data: bytes | bytearray | memoryview | str,
        name: str,
        ingest_id: str | None,
        now_ms: int,
    ) -> dict[str, object]:
        """Ingests the raw bytes of one whole file; ``name`` gives its kind."""
    def results_json(self, query_json: str, now_ms: int) -> str:
        """Rows of a Metrics API query as JSON text."""
    def results_arrays(
        self, query_json: str, now_ms: int
    ) -> tuple[
        npt.NDArray[np.int64],
        npt.NDArray[np.uint32],
        npt.NDArray[np.float64],
        list[str],
        list[list[str]],
        list[npt.NDArray[np.uint32]],
        list[npt.NDArray[np.uint32]],
        bool,
    ]:
        """(dt ms, tuple id per row, values, keys, per-key sorted values, per-key code per row,
        per-key code per tuple, grouped); arrays leave Rust uncopied."""
    def results_multi_json(self, queries_json: str, now_ms: int) -> str:
        """The compact ``?multi=true`` rows as JSON text."""
    def answer(
        self,
        kind: str,
        body: bytes | bytearray | memoryview | str,
        now_ms: int,
        max_rows: int = 0,
        max_bytes: int = 0,
        chunk_bytes: int = 1048576,
    ) -> tuple[int, list[bytes], int]:
        """(status, answer chunks, length) for a raw Metrics API body; status 0 answered, 1 not
        strict JSON, 2 JSON of the wrong shape."""
    def groupings_json(self, query_json: str) -> str:
        """Distinct values of ``groupingName`` as JSON ``[{"value": ...}]``."""
    def filter_definitions_json(self) -> str:
        """Every filter definition as JSON text."""
    def ingest_definitions_json(self) -> str:
        """Every ingest definition as JSON text."""
    def add_filter(self, filter_json: str) -> None:
        """Adds a filter."""
    def remove_filter(self, filter_id: str) -> None:
        """Removes a filter and its state."""
    def add_ingest(self, ingest_json: str) -> None:
        """Adds an ingest definition."""
    def remove_ingest(self, ingest_id: str) -> None:
        """Removes an ingest definition."""
    def to_bytes(self) -> bytes:
        """Versioned, checksummed snapshot."""
    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview | str) -> Engine:
        """Rebuilds an engine from a snapshot."""
    def merge(self, other: Engine) -> None:
        """Adds another engine's state; definitions must match."""
    def drop_before(self, horizon_ms: int, filter_id: str | None = None) -> int:
        """Drops buckets starting before the horizon; returns cells dropped."""
    def state_bytes(self) -> int:
        """Approximate bytes held by aggregates."""
    def hold_compaction_steps(self, micros: int) -> None:
        """Test hook: each compaction step keeps the state lock ``micros`` longer."""
    def compact(self, now_ms: int, default_retention_json: str | None = None) -> str:
        """Compacts old buckets into coarser retention tiers; the report as JSON text."""
    def resolutions_json(self, query_json: str) -> str:
        """The tiers serving a query window, finest first, as JSON text."""
    def tier_usage_json(self) -> str:
        """Per filter, per tier: interval, rows and bytes, as JSON text."""

def crc32(data: bytes | bytearray | memoryview | str, value: int = 0) -> int:
    """``zlib.crc32(data, value)``, by the core (crc32fast); a ``str`` is checksummed as its UTF-8
    (``bytes`` of 1 MiB or more detached from the interpreter)."""

def message_ids(
    body: bytes | bytearray | memoryview | str, schema: str, array_path: str | None = None
) -> tuple[list[tuple[int, int, int, str | None]], tuple[int, int] | None] | None:
    """Each event's ``messageId`` read by the engine's batch grammar: ``(units, array_span)``
    with units ``(start, end, kind, value)`` (kind 0 structural NDJSON line, 1 no id, 2 string
    id, 3 other id as JSON text), or ``None`` for a body the engine would refuse."""
