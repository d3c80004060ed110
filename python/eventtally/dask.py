"""Batch aggregation of event archives on Dask (the optional extra ``eventtally[dask]``).

``aggregate(...)`` reads files from local paths, globs or any fsspec URL (``s3://``, ``gs://``,
``http(s)://``, ``memory://``), one task per group of ``files_per_task`` files. Each task hands
every file whole to the engine in Rust (one call per file: decompression, parsing and
aggregation never make a Python object per event) and returns its partial engine as snapshot
bytes; the partial engines are merged tree-wise (``Bag.reduction`` with ``split_every``), and
the merge is exact, so the result equals one engine that ingested every file.

Guarantees: definitions are validated before any task runs; an error names the file (its URL)
and the byte offset into the decompressed file; partial states travel as versioned snapshot
bytes and are validated when loaded (a worker's output is untrusted like any snapshot); the
graph is an ordinary Dask collection, so Dask's progress tools and dashboard show it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eventtally._engine import Engine

__all__ = ["aggregate", "aggregate_bag"]

MAX_DEFAULT_TASKS = 1000
"""With ``files_per_task=None`` there is one task per file, up to this many tasks."""


def _require_dask() -> Any:
    try:
        import dask.bag as db
        import fsspec
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "eventtally.dask needs Dask and fsspec: pip install 'eventtally[dask]'"
        ) from exc
    return db, fsspec


def _expand(
    urlpath_or_paths: str | Sequence[str], storage_options: Mapping[str, Any] | None
) -> tuple[Any, list[str]]:
    """The filesystem and the list of file URLs a path, glob, URL or list of them names."""
    _, fsspec = _require_dask()
    items = [urlpath_or_paths] if isinstance(urlpath_or_paths, str) else list(urlpath_or_paths)
    if not all(isinstance(p, str) for p in items):
        raise TypeError("urlpath_or_paths must be a str or a list of str")
    if not items:
        return None, []
    fs, _, paths = fsspec.core.get_fs_token_paths(
        items, mode="rb", storage_options=dict(storage_options or {})
    )
    if not paths:
        raise FileNotFoundError(f"no file matches {urlpath_or_paths!r}")
    return fs, sorted(paths)


def _ingest_partition(
    paths: Iterable[str],
    fs: Any,
    definitions: tuple[Any, list[Any]],
    ingest_id: str | None,
    received_at: float,
) -> bytes:
    """One task: every file of the partition into a fresh engine, returned as snapshot bytes."""
    ingest, filters = definitions
    engine = Engine(ingest, filters)
    for path in paths:
        url = fs.unstrip_protocol(path)
        with fs.open(path, "rb") as fh:
            data = fh.read()
        engine.ingest_file_bytes(data, url, ingest_id=ingest_id, received_at=received_at)
    return engine.to_bytes()


def _merge_snapshots(parts: Iterable[bytes]) -> bytes:
    """One reduction step: several partial engines merged into one, as snapshot bytes."""
    merged: Engine | None = None
    for data in parts:
        if merged is None:
            merged = Engine.from_bytes(data)
        else:
            merged.merge(Engine.from_bytes(data))
    if merged is None:  # an empty group (Dask may hand the aggregate an empty iterable)
        raise ValueError("nothing to merge")
    return merged.to_bytes()


def aggregate_bag(
    urlpath_or_paths: str | Sequence[str],
    ingest: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    filters: Iterable[Mapping[str, Any]],
    *,
    files_per_task: int | None = None,
    split_every: int = 8,
    storage_options: Mapping[str, Any] | None = None,
    ingest_id: str | None = None,
    received_at: float | None = None,
) -> Any:
    """The lazy form of ``aggregate``: a ``dask.bag.Item`` whose value is the merged snapshot
    bytes (``Engine.from_bytes(item.compute())``). Use it to ``persist``, watch with
    ``distributed.progress`` or combine with other Dask work."""
    db, _ = _require_dask()
    filters = list(filters)
    if isinstance(ingest, Mapping):
        ingest_list: Any = dict(ingest)
    else:
        ingest_list = [dict(i) for i in ingest]
    # Validate definitions (and the ingest id) here, before any task is submitted.
    probe = Engine(ingest_list, filters)
    if ingest_id is not None and ingest_id not in {i["id"] for i in probe.ingest_definitions()}:
        raise ValueError(f"unknown ingest_id {ingest_id!r}")
    if not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an int of at least 2, got {split_every!r}")
    fs, paths = _expand(urlpath_or_paths, storage_options)
    if files_per_task is None:
        files_per_task = max(1, math.ceil(len(paths) / MAX_DEFAULT_TASKS))
    if not isinstance(files_per_task, int) or files_per_task < 1:
        raise ValueError(f"files_per_task must be a positive int, got {files_per_task!r}")
    when = time.time() if received_at is None else received_at
    # Every task uses the same ingest time, so ingest-time events bucket alike everywhere.
    definitions = (ingest_list, filters)
    if not paths:
        return db.from_sequence([probe.to_bytes()], npartitions=1).reduction(
            _merge_snapshots, _merge_snapshots, split_every=split_every
        )
    bag = db.from_sequence(paths, partition_size=files_per_task)
    return bag.reduction(
        lambda part: _ingest_partition(part, fs, definitions, ingest_id, when),
        _merge_snapshots,
        split_every=split_every,
    )


def aggregate(
    urlpath_or_paths: str | Sequence[str],
    ingest: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    filters: Iterable[Mapping[str, Any]],
    *,
    client: Any = None,
    files_per_task: int | None = None,
    split_every: int = 8,
    storage_options: Mapping[str, Any] | None = None,
    ingest_id: str | None = None,
    received_at: float | None = None,
) -> Engine:
    """Aggregates every file ``urlpath_or_paths`` names on Dask and returns one ``Engine``.

    ``urlpath_or_paths``: a path, glob or fsspec URL (``"s3://bucket/2024/*/*.gz"``), or a list
    of them. ``client``: a ``distributed.Client``; without one, Dask's current scheduler (a
    default client if one exists, else the local threaded scheduler). ``files_per_task``: files
    one task reads (default: one, or more to keep at most 1,000 tasks). ``split_every``: how
    many partial engines one reduction step merges. ``storage_options``: passed to fsspec.
    ``received_at``: the ingest time (Unix seconds) for events dated by ingest time, the same in
    every task (default: now).
    """
    item = aggregate_bag(
        urlpath_or_paths,
        ingest,
        filters,
        files_per_task=files_per_task,
        split_every=split_every,
        storage_options=storage_options,
        ingest_id=ingest_id,
        received_at=received_at,
    )
    data = client.compute(item).result() if client is not None else item.compute()
    return Engine.from_bytes(data)
