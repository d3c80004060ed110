"""eventtally: a self-hosted real-time aggregation engine for product-analytics events.

Wire-compatible with Aggregations.io's ingest and Metrics API; usable in-process with no server.
"""

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
