"""Every exception the server raises, and the one table that turns them into HTTP answers.

Guarantees:
- Every server exception derives from :class:`ServerError`.  Each also keeps the standard base
  it always had (``ValueError`` for refused input, ``OSError`` for a data directory or a log
  that cannot be written), so code that catches ``ValueError`` or ``OSError`` still does.
- :data:`STATUSES` is the only place that maps an exception to a status: :func:`http_error`
  reads it (the first class the exception is an instance of wins) and the WSGI app applies it
  to whatever a route raises; an exception not in the table is a 500 (logged by the app).
- A status with a fixed message never shows the exception's text (an ``OSError``'s text
  names server paths); every other one answers ``{"message": str(exc)}``.
- Nothing here is an ``OSError`` unless something failed at the OS level:
  :class:`DefinitionsPendingError` (definitions waiting for a snapshot) is a named 503, and
  :class:`BatchNotLoggedError` wraps the ``OSError`` of a log that could not take a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import eventtally

__all__ = [
    "RETRY_BUSY",
    "RETRY_PERSIST",
    "RETRY_STATE_LIMIT",
    "STATUSES",
    "BackfillError",
    "BatchNotLoggedError",
    "ConfigFileError",
    "Conflict",
    "DataDirBusyError",
    "DefinitionsPendingError",
    "HTTPError",
    "HealthQueryError",
    "MetadataError",
    "NotFound",
    "NotReadyError",
    "ProvisioningError",
    "RepeatedBackfillError",
    "ServerError",
    "StateLimitError",
    "Status",
    "http_error",
]

#: Retry-After (seconds) of the 503s and 429s the server sends.
RETRY_BUSY = 1
RETRY_PERSIST = 5
RETRY_STATE_LIMIT = 60


class ServerError(Exception):
    """The root of every exception the server defines."""


class HTTPError(ServerError):
    """An error response: ``status`` and a message for the ``{"message"}`` body."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


# ------------------------------------------------------------------ configuration


class ConfigFileError(ServerError, ValueError):
    """The TOML file is unreadable or has a wrong shape; the message names the key."""


class ProvisioningError(ServerError, ValueError):
    """The config's organizations cannot be applied; the message names the place."""


# ------------------------------------------------------------------ metadata


class MetadataError(ServerError, ValueError):
    """A metadata operation was refused; the message is safe to show to the operator."""


class NotFound(MetadataError):
    """The named organization, ingest, filter or key does not exist."""


class Conflict(MetadataError):
    """An object with that id already exists."""


# ------------------------------------------------------------------ runtime


class DataDirBusyError(ServerError, OSError):
    """Another process holds the data directory (a running server)."""

    def __init__(self, path: Path, pid: str) -> None:
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"the data directory {path.parent} is in use by {who} (a running eventtally server?)"
        )
        self.pid = pid


class NotReadyError(ServerError):
    """The runtime is still recovering (or already closed): answer 503 with Retry-After.

    The message is the runtime's state ("recovering", "shutting down", ...)."""


class DefinitionsPendingError(ServerError):
    """The organization's definitions changed and their snapshot failed: its batches are
    refused (503) until a snapshot lands, so no batch is logged under unsaved definitions."""


class BatchNotLoggedError(ServerError, OSError):
    """The write-ahead log could not take the batch (an OS error, or a log closed or failed
    after one); the batch was not applied.  The ``OSError`` it wraps is its ``__cause__``."""


class StateLimitError(ServerError):
    """The organization's aggregate state is over ``max_state_bytes_per_org``."""

    def __init__(self, org_id: str, used: int, limit: int) -> None:
        super().__init__(
            f"State size limit reached for organization {org_id} ({used} of {limit} bytes); "
            "batches are refused until compaction frees space or an operator raises "
            "max_state_bytes_per_org; to keep less, lower the keepSeconds of the filters' "
            'retention tiers (a filter\'s own "retention", else server.retention or '
            "server.org_retention) and run eventtally compact"
        )
        self.used = used
        self.limit = limit


class BackfillError(ServerError, ValueError):
    """A backfill that cannot run (unknown filter, no log, overlapping an earlier one...)."""


class RepeatedBackfillError(BackfillError):
    """A snapshot backfill of bytes already merged into the organization."""


class HealthQueryError(ServerError, ValueError):
    """An ``ingest-health`` query parameter is out of range."""


# ------------------------------------------------------------------ the table


@dataclass(frozen=True, slots=True)
class Status:
    """How an exception is answered: ``code``, a ``Retry-After`` (seconds) when the client
    should retry, and the ``message`` (``None``: the exception's own text; ``{}`` in it is
    replaced by that text)."""

    code: int
    retry_after: int | None = None
    message: str | None = None


_NOT_PERSISTED = Status(503, RETRY_PERSIST, "Could not persist the batch; retry later")

#: The one exception → answer table, most specific class first (documented in docs/server.md).
#: Engine errors (``JsonError`` "malformed JSON at byte N: ...", ``FormatError``,
#: ``QueryError``, ``ConfigError``, ``PathSyntaxError``, ``LimitError``) mean the request is
#: at fault, and their message names the problem and where it is.
STATUSES: tuple[tuple[type[BaseException], Status], ...] = (
    (NotReadyError, Status(503, RETRY_BUSY, "Server not ready ({}); retry later")),
    # Segment retries a 503: a log that cannot write is the server's problem, never a 400.
    (BatchNotLoggedError, _NOT_PERSISTED),
    (DefinitionsPendingError, _NOT_PERSISTED),
    # 429 so Segment retries later (docs/server.md says why not 507 or 413).
    (StateLimitError, Status(429, RETRY_STATE_LIMIT)),
    (RepeatedBackfillError, Status(409)),
    (BackfillError, Status(400)),
    (NotFound, Status(404)),
    (Conflict, Status(409)),
    (MetadataError, Status(400)),
    (HealthQueryError, Status(400)),
    (eventtally.NotFoundError, Status(404)),
    (eventtally.EventtallyError, Status(400)),
)


def http_error(exc: BaseException) -> HTTPError | None:
    """The answer to ``exc`` per :data:`STATUSES` (``exc`` itself for an :class:`HTTPError`);
    ``None`` when the table has no entry (a 500)."""
    if isinstance(exc, HTTPError):
        return exc
    for cls, status in STATUSES:
        if isinstance(exc, cls):
            text = str(exc)
            message = text if status.message is None else status.message.replace("{}", text)
            headers = (
                [] if status.retry_after is None else [("Retry-After", str(status.retry_after))]
            )
            return HTTPError(status.code, message, headers)
    return None
