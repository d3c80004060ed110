"""eventtally: a self-hosted real-time aggregation engine for product-analytics events.

Wire-compatible with Aggregations.io's ingest and Metrics API; usable in-process with no server.
"""

from importlib import metadata as _metadata

from eventtally._engine import Engine, IngestStats, PreparedBatch, ResultArrays
from eventtally.exceptions import (
    ConfigError,
    EventtallyError,
    EventtallyIOError,
    FormatError,
    JsonError,
    LimitError,
    NotFoundError,
    PathSyntaxError,
    QueryError,
    SnapshotError,
)

__all__ = [
    "ConfigError",
    "Engine",
    "EventtallyError",
    "EventtallyIOError",
    "FormatError",
    "IngestStats",
    "JsonError",
    "LimitError",
    "NotFoundError",
    "PathSyntaxError",
    "PreparedBatch",
    "QueryError",
    "ResultArrays",
    "SnapshotError",
]

try:
    #: The installed distribution's version (the Rust crates' version, via maturin).
    __version__: str = _metadata.version("eventtally")
except _metadata.PackageNotFoundError:  # pragma: no cover - imported from an unbuilt source tree
    __version__ = "0+unknown"
