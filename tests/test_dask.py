"""``eventtally.dask.aggregate`` (issue 12): archives aggregated on Dask equal one engine that
ingested every file, for every calculation; local paths, globs and fsspec ``memory://`` URLs;
an in-process ``LocalCluster``; errors name the file (URL) and offset; Dask's progress tools
see the graph; and one run on 2 worker processes, in a subprocess script guarded by
``if __name__ == "__main__"`` with a hard timeout.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
fsspec = pytest.importorskip("fsspec")

from distributed import Client, LocalCluster  # noqa: E402

from eventtally import Engine, JsonError  # noqa: E402
from eventtally import dask as etdask  # noqa: E402
from tests.test_query import INGEST, T0, Clock, ndjson  # noqa: E402
from tests.test_snapshot import FILTERS, assert_same_answers, make_events  # noqa: E402

CLOCK = Clock(T0 + 30 * 86_400)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return make_events(5000, seed=21)


def write_archive(root: Path, events: list[dict[str, Any]], parts: int = 10) -> list[Path]:
    """Hourly-style archive files: mostly gzipped NDJSON, one plain NDJSON and one JSON."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(parts):
        chunk = events[i::parts]
        if i == 3:
            p = root / f"hour-{i:02d}.json"
            p.write_text(json.dumps(chunk))
        elif i == 5:
            p = root / f"hour-{i:02d}.ndjson"
            p.write_text(ndjson(chunk))
        else:
            p = root / f"hour-{i:02d}.ndjson.gz"
            p.write_bytes(gzip.compress(ndjson(chunk).encode()))
        paths.append(p)
    return paths


def one_engine(paths: list[Path]) -> Engine:
    engine = Engine(INGEST, FILTERS, clock=CLOCK)
    for p in paths:
        engine.ingest_file(p)
    return engine


def with_clock(engine: Engine) -> Engine:
    return Engine.from_bytes(engine.to_bytes(), clock=CLOCK)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def test_local_glob_on_a_local_cluster_equals_one_engine(
    tmp_path: Path, events: list[dict[str, Any]], client: Client
) -> None:
    paths = write_archive(tmp_path / "arch", events)
    for files_per_task, split_every in ((1, 2), (3, 8), (None, 4)):
        got = etdask.aggregate(
            str(tmp_path / "arch" / "hour-*"),
            INGEST,
            FILTERS,
            client=client,
            files_per_task=files_per_task,
            split_every=split_every,
        )
        assert_same_answers(with_clock(got), one_engine(paths), avg_rel=1e-9)


def test_list_of_paths_and_the_default_scheduler(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    paths = write_archive(tmp_path / "arch", events[:1500], parts=4)
    got = etdask.aggregate([str(p) for p in paths], INGEST, FILTERS, files_per_task=2)
    assert_same_answers(with_clock(got), one_engine(paths), avg_rel=1e-9)


def test_memory_filesystem_urls(
    tmp_path: Path, events: list[dict[str, Any]], client: Client
) -> None:
    paths = write_archive(tmp_path / "arch", events)
    mem = fsspec.filesystem("memory")
    for p in paths:
        mem.pipe(f"/et-test/{p.name}", p.read_bytes())
    try:
        got = etdask.aggregate("memory://et-test/*", INGEST, FILTERS, client=client)
        assert_same_answers(with_clock(got), one_engine(paths), avg_rel=1e-9)
    finally:
        mem.rm("/et-test", recursive=True)


def test_an_error_names_the_url_and_offset(tmp_path: Path, client: Client) -> None:
    mem = fsspec.filesystem("memory")
    mem.pipe("/et-bad/good.ndjson.gz", gzip.compress(ndjson([{"ts": T0}]).encode()))
    mem.pipe("/et-bad/bad.ndjson.gz", gzip.compress(b'{"ts": 1704067200}\n{"ts": ]\n'))
    try:
        with pytest.raises(JsonError) as info:
            etdask.aggregate("memory://et-bad/*.gz", INGEST, FILTERS, client=client)
        # fsspec's canonical URL of the file (the memory filesystem roots paths at "/")
        assert "memory:///et-bad/bad.ndjson.gz" in str(info.value)
        assert info.value.offset >= 19  # the second line of the decompressed file
    finally:
        mem.rm("/et-bad", recursive=True)


def test_argument_errors_before_any_task(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file matches"):
        etdask.aggregate(str(tmp_path / "nothing-*.gz"), INGEST, FILTERS)
    with pytest.raises(ValueError, match="split_every"):
        etdask.aggregate([], INGEST, FILTERS, split_every=1)
    with pytest.raises(ValueError, match="files_per_task"):
        etdask.aggregate(str(tmp_path), INGEST, FILTERS, files_per_task=0)
    from eventtally import ConfigError

    with pytest.raises(ConfigError):
        etdask.aggregate([], INGEST, [{"id": "x"}])
    empty = etdask.aggregate([], INGEST, FILTERS)
    assert empty.to_bytes() == Engine(INGEST, FILTERS).to_bytes()


def test_dask_progress_bar_sees_the_tasks(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    from dask.diagnostics import ProgressBar

    paths = write_archive(tmp_path / "arch", events[:600], parts=3)
    item = etdask.aggregate_bag([str(p) for p in paths], INGEST, FILTERS)
    out: list[str] = []

    class Sink:
        def write(self, s: str) -> None:
            out.append(s)

        def flush(self) -> None:
            pass

    with ProgressBar(out=Sink(), minimum=0, dt=0.01):
        data = item.compute(scheduler="threads")
    assert "100%" in "".join(out)
    assert_same_answers(with_clock(Engine.from_bytes(data)), one_engine(paths), avg_rel=1e-9)


TWO_PROCESSES = textwrap.dedent(
    """
    import sys

    if __name__ == "__main__":
        sys.path[:0] = sys.argv[2:]
        from pathlib import Path

        from distributed import Client, LocalCluster

        from eventtally import Engine
        from eventtally import dask as etdask
        from test_dask import CLOCK, one_engine, with_clock, write_archive
        from test_query import INGEST
        from test_snapshot import FILTERS, assert_same_answers, make_events

        paths = write_archive(Path(sys.argv[1]), make_events(3000, seed=8), parts=8)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            got = etdask.aggregate(sorted(map(str, paths)), INGEST, FILTERS, client=client,
                                   files_per_task=1, split_every=3)
            workers = {w for w in client.run(lambda: 1)}
        assert len(workers) == 2, workers
        assert_same_answers(with_clock(got), one_engine(paths), avg_rel=1e-9)
        print("TWO-PROCESSES-OK")
    """
)


def test_two_worker_processes(tmp_path: Path) -> None:
    script = tmp_path / "two_workers.py"
    script.write_text(TWO_PROCESSES)
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "arch"), here, str(Path(here).parent)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TWO-PROCESSES-OK" in done.stdout
