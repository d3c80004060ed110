"""Private files and directories in the data directory.

Guarantees:
- :func:`make_private_dirs` creates a directory and every missing parent with mode ``0700``, and
  :func:`open_private` creates files with mode ``0600``, whatever the process umask (the mode is
  set with ``chmod``/``fchmod`` after creation, so a umask can neither widen nor narrow it).
  The data directory holds every accepted batch, aggregate state and API-key hashes: no other
  local user may read it.
- :func:`make_private_dirs` fsyncs the parent of each directory it creates, after creating it, so
  a freshly made ``data/wal`` (and ``data/`` itself) survives a power loss; files made in it later
  are fsynced by their writers.
- Existing directories are left as they are (an operator may have chosen the data directory's
  mode); a file opened with ``O_CREAT`` is ``0600`` afterwards even if an older version made it
  ``0644``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "fsync_dir", "make_private_dirs", "open_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so the names created in it are durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents (``0700``), fsyncing each new one's parent."""
    target = Path(path)
    missing: list[Path] = []
    p = target
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # another process made it first: its mode is its business
        os.chmod(d, DIR_MODE)
        with contextlib.suppress(OSError):  # e.g. a parent we may not open: durability best effort
            fsync_dir(d.parent)
    return target


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags)``; with ``O_CREAT`` the file is ``0600`` afterwards."""
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    if flags & os.O_CREAT:
        try:
            os.fchmod(fd, FILE_MODE)
        except PermissionError:
            pass  # an existing file of another owner (we own every file we create)
        except BaseException:
            os.close(fd)
            raise
    return fd
