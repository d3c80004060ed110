"""eventtally: a self-hosted real-time aggregation engine for product-analytics events.

Wire-compatible with Aggregations.io's ingest and Metrics API; usable in-process with no server.

Importing the package loads the compiled core and the standard library modules the typed
wrappers need, nothing more: numpy is imported by the first call that returns arrays
(``Engine.results_arrays``), and ``__version__`` is read from the installed distribution's
metadata when it is first asked for (``importlib.metadata`` alone costs more than the rest of
the import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

#: The installed distribution's version (the Rust crates' version, via maturin); read on first
#: access by ``__getattr__`` below, then kept as a plain module attribute.
__version__: str

if not TYPE_CHECKING:
    # Hidden from type checkers: a module ``__getattr__`` would make them accept any misspelt
    # attribute of the package as a ``str``.

    def __getattr__(name: str) -> str:
        """Module attributes computed on first access (PEP 562): only ``__version__``."""
        if name != "__version__":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import metadata

        try:
            version = metadata.version("eventtally")
        except metadata.PackageNotFoundError:  # pragma: no cover - imported from an unbuilt tree
            version = "0+unknown"
        globals()["__version__"] = version
        return version
