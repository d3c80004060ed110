"""The one filesystem helper module: private files and directories, atomic writes, fsync, writev.

Guarantees:
- :func:`make_private_dirs` creates a directory and every missing parent with mode ``0700``, and
  :func:`open_private` creates files with mode ``0600``, whatever the process umask (the mode is
  set with ``chmod``/``fchmod`` after creation, so a umask can neither widen nor narrow it).
  The data directory holds every accepted batch, aggregate state and API-key hashes: no other
  local user may read it.
- :func:`make_private_dirs` fsyncs the parent of each directory it creates, after creating it, so
  a freshly made ``data/wal`` (and ``data/`` itself) survives a power loss; files made in it later
  are fsynced by their writers.
- :func:`atomic_write` replaces (or, with ``exclusive``, creates) a file so that a reader and a
  crash see either the old content or the whole new one: temporary file in the same directory,
  every byte written, ``fsync``, rename (``os.replace``; ``os.link`` when exclusive), then
  ``fsync`` of the directory so the new name survives a power loss.  The temporary file is
  removed when anything fails.
- :func:`write_all` writes every byte of a list of buffers with ``writev`` (one system call in
  the usual case, without joining them: a snapshot can be large), retrying short writes.
- Existing directories are left as they are (an operator may have chosen the data directory's
  mode); a file opened with ``O_CREAT`` is ``0600`` afterwards even if an older version made it
  ``0644``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "Buffer",
    "atomic_write",
    "fsync_dir",
    "make_private_dirs",
    "open_private",
    "pwrite_all",
    "write_all",
]

#: What :func:`write_all` and :func:`atomic_write` take: bytes-like buffers.
Buffer = bytes | bytearray | memoryview

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


def _write_fully(parts: list[Buffer], write: Callable[[list[Buffer], int], int]) -> int:
    """Every byte of ``parts`` through ``write(buffers, bytes already written)``, which returns
    how many it wrote; returns the total.  One call in the usual case; a short write (regular
    files rarely write short, but may) continues from the first byte not written."""
    total = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
    done = write(parts, 0)
    if done == total:
        return total
    views: list[Buffer] = [memoryview(p).cast("B") for p in parts if len(p)]
    written = 0
    while views:
        written += done
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]
            done = 0
        if views:
            done = write(views, written)
    return total


def write_all(fd: int, parts: list[Buffer]) -> int:
    """``writev`` every byte of ``parts`` to ``fd`` at its file position; returns the number of
    bytes written."""
    return _write_fully(parts, lambda bufs, _written: os.writev(fd, bufs))


def pwrite_all(fd: int, parts: list[Buffer], offset: int) -> int:
    """``pwritev`` every byte of ``parts`` to ``fd`` at ``offset``; returns the bytes written.

    Positional, so the file position is neither read nor moved: the write-ahead log appends
    each record (and the end marker after it) in one system call, with no ``lseek`` back over
    the marker."""
    return _write_fully(parts, lambda bufs, written: os.pwritev(fd, bufs, offset + written))


def atomic_write(
    path: str | os.PathLike[str],
    data: Buffer | list[Buffer],
    *,
    tmp: str | os.PathLike[str] | None = None,
    private: bool = True,
    exclusive: bool = False,
) -> bool:
    """Write ``data`` (one buffer or several, written with :func:`write_all`) to ``path``
    atomically and durably; True when ``path`` now holds it.

    ``tmp`` names the temporary file (default ``.<name>.<pid>.<thread>.tmp`` beside ``path``).
    ``private`` makes the file ``0600`` (else the umask decides, as for ``open``).  With
    ``exclusive`` an existing ``path`` is kept (another process won the race) and the result
    is False.
    """
    target = Path(path)
    temp = (
        Path(tmp)
        if tmp is not None
        else target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = open_private(temp, flags) if private else os.open(temp, flags, 0o666)
        try:
            write_all(fd, data if isinstance(data, list) else [data])
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(temp, target)
            except FileExistsError:
                return False
            finally:
                temp.unlink(missing_ok=True)
        else:
            os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(target.parent)
    return True
