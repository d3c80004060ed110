"""Depth-limited JSON parsing of client request bodies.

Guarantees:
- :func:`loads` parses like :func:`json.loads`, but a document nested deeper than ``max_depth``
  arrays/objects raises :class:`TooDeepError` (a ``ValueError``) *before* the recursive parser
  runs, so a hostile body can never raise ``RecursionError`` (which used to become a 500).  The
  message names the limit.
- The depth check does not recurse and costs two C-level passes over the body; bodies with at
  most ``max_depth`` brackets in total (every real query) skip it entirely.
- Brackets inside JSON strings (escaped quotes included) do not count.  The check never accepts
  what ``json.loads`` would reject and never changes the parsed value.

Every parse of a client body in Python goes through here: the server's ``read_json`` (queries,
admin documents; limit :data:`MAX_DEPTH`) and the ``messageId`` deduplicator (limit
:data:`ENGINE_MAX_DEPTH`, the Rust engine's own, so deduplication covers every batch the engine
accepts).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

__all__ = ["ENGINE_MAX_DEPTH", "MAX_DEPTH", "TooDeepError", "check_depth", "depth", "loads"]

#: Deepest nesting accepted in a request body.  Queries and admin documents nest a handful of
#: levels; 64 leaves room while staying far below the interpreter's recursion limit (the parser
#: and later ``json.dumps`` of the value each recurse once per level).
MAX_DEPTH = 64
#: The Rust engine's nesting limit for ingest bodies (a deeper batch is a 400 from the engine).
ENGINE_MAX_DEPTH = 512

# A complete JSON string, written "unrolled" so it matches in linear time (no nested quantifier
# that could backtrack on an unterminated string).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class TooDeepError(ValueError):
    """The document nests deeper than the limit."""

    def __init__(self, found: int, limit: int) -> None:
        super().__init__(f"JSON nested deeper than the limit of {limit} levels (found {found})")
        self.found = found
        self.limit = limit


def depth(data: bytes) -> int:
    """The deepest array/object nesting in ``data`` (brackets in strings ignored)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(_STEP[b] for b in brackets)))


def check_depth(raw: bytes, max_depth: int = MAX_DEPTH) -> None:
    """:class:`TooDeepError` if ``raw`` nests deeper than ``max_depth``."""
    # Fewer brackets than the limit cannot nest past it: the usual case costs two counts.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        found = depth(raw)
        if found > max_depth:
            raise TooDeepError(found, max_depth)


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(data)``, refusing documents nested deeper than ``max_depth``.

    Raises :class:`TooDeepError` for too deep a document, ``json.JSONDecodeError`` or
    ``UnicodeDecodeError`` for malformed ones (all ``ValueError``).
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    check_depth(raw, max_depth)
    try:
        return json.loads(raw)
    except RecursionError as exc:
        # Unreachable while the scan agrees with the parser; a belt to the braces above.
        raise TooDeepError(max_depth + 1, max_depth) from exc
