"""The eventtally exception tree.

Every error the engine raises is an ``EventtallyError`` (a ``ValueError``; the file error
``EventtallyIOError`` is also an ``OSError``) carrying structured attributes, so callers and the
HTTP server can react without parsing messages. The Rust core maps its errors to these classes
at a single conversion point.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "ConfigError",
    "EventtallyError",
    "EventtallyIOError",
    "FormatError",
    "JsonError",
    "LimitError",
    "NotFoundError",
    "PathSyntaxError",
    "QueryError",
    "SnapshotError",
]


class EventtallyError(ValueError):
    """Root of every eventtally error."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        for key, value in details.items():
            setattr(self, key, value)


class JsonError(EventtallyError):
    """Malformed JSON or invalid UTF-8; ``offset`` is a byte offset into the batch."""

    offset: int
    reason: str


class FormatError(EventtallyError):
    """Valid JSON that does not match the ingest's format ("Incorrect event format")."""

    offset: int
    reason: str


class PathSyntaxError(EventtallyError):
    """A JPath that does not compile; ``position`` is a character offset into ``expression``."""

    field: str
    expression: str
    position: int
    reason: str


class ConfigError(EventtallyError):
    """An invalid ingest or filter definition; ``field`` names the offending field."""

    field: str
    reason: str


class QueryError(EventtallyError):
    """An invalid Metrics API query; ``field`` names the offending request field."""

    field: str
    reason: str


class NotFoundError(EventtallyError):
    """An unknown filter, aggregation or ingest (``kind``, ``id``)."""

    kind: str
    id: str


class SnapshotError(EventtallyError):
    """A snapshot that is corrupt, truncated, of an unknown version or incompatible."""

    reason: str


class LimitError(EventtallyError):
    """A configured resource limit was reached."""

    reason: str


class EventtallyIOError(EventtallyError, OSError):
    """A file could not be read or written (``path``, ``reason``).

    Also an ``OSError``, so ``except OSError`` catches it next to the standard library's own
    file errors, with ``filename`` set to ``path`` and ``errno`` to the operating system's code
    when the reason carries one (``errno.ENOENT`` for a missing file). It is not a
    ``FileNotFoundError``: test ``exc.errno`` rather than catching that subclass.
    """

    path: str
    reason: str

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.filename = details.get("path")
        # Rust's io::Error text ends in "(os error N)"; recover N for callers that test errno.
        match = re.search(r"\(os error (\d+)\)", str(details.get("reason", "")))
        if match:
            self.errno = int(match.group(1))
            self.strerror = os.strerror(self.errno)

    def __str__(self) -> str:
        # OSError would format "[Errno 2] ...: 'path'"; keep the engine's own message.
        return self.message
