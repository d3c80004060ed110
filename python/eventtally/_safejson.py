"""Depth-limited JSON parsing of client request bodies.

Guarantees:
- :func:`loads` parses like :func:`json.loads`, but a document nested deeper than ``max_depth``
  arrays/objects raises :class:`TooDeepError` (a ``ValueError``) *before* the recursive parser
  runs, so a hostile body can never raise ``RecursionError`` (which used to become a 500).  The
  message names the limit.
- The depth check does not recurse, runs in linear time whatever the body's shape, with no
  per-byte Python loop (C-level bytes operations and one numpy prefix sum: about a third of
  ``json.loads`` on a 300-event batch, ``benches/run_depth_scan.py``); bodies with at most
  ``max_depth`` brackets in total (every real query) skip it entirely.
- Brackets inside JSON strings (escaped quotes included) do not count.  The check never accepts
  what ``json.loads`` would reject and never changes the parsed value.

Every parse of a client body in Python goes through here: the server's ``read_json`` (queries,
admin documents) and the ``messageId`` deduplicator (which hands deeper batches to the engine
undeduplicated; the engine itself parses ingest bodies in Rust with a limit of 512).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["MAX_DEPTH", "TooDeepError", "check_depth", "depth", "loads"]

#: Deepest nesting accepted in a request body.  Queries and admin documents nest a handful of
#: levels; 64 leaves room while staying far below the interpreter's recursion limit (the parser
#: and later ``json.dumps`` of the value each recurse once per level).
MAX_DEPTH = 64

# Quotes and brackets only, braces folded into square brackets: nesting is all the scan needs.
_FOLD = bytes.maketrans(b"{}", b"[]")
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')
_STEPS = np.zeros(256, dtype=np.int8)
_STEPS[ord("[")] = 1
_STEPS[ord("]")] = -1


class TooDeepError(ValueError):
    """The document nests deeper than the limit."""

    def __init__(self, found: int, limit: int) -> None:
        super().__init__(f"JSON nested deeper than the limit of {limit} levels")
        self.found = found
        self.limit = limit


def depth(data: bytes) -> int:
    """The deepest array/object nesting in ``data`` (brackets inside strings ignored).

    Exact for well-formed JSON; for malformed input, the deepest point a parser reading left to
    right could reach.  No per-byte Python loop, and linear time whatever the shape:

    1. escaped backslashes, then escaped quotes, are dropped, so every quote left delimits a
       string;
    2. everything but quotes and brackets is dropped;
    3. adjacent quote pairs are dropped: no bracket lies between them, and every other quote
       keeps its parity, so each bracket stays inside or outside a string as it was (this removes
       almost every string at C speed);
    4. the brackets between the quotes still left (strings holding brackets) are dropped;
    5. the depth is the largest prefix sum of +1 per opener and -1 per closer (numpy).
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(_FOLD, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    if not marks:
        return 0
    steps = _STEPS[np.frombuffer(marks, dtype=np.uint8)]
    return max(0, int(np.cumsum(steps, dtype=np.int64).max()))


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
