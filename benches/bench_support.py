"""Fixtures for the benchmark suites: generated Segment datasets and their exact answers.

What this module guarantees:

- Each dataset is generated once per session (``segment_gen.generate_events(n, seed)``) and
  encoded every way the engines need: one JSON array, NDJSON, Segment-sized 300-event arrays,
  and an NDJSON file for DuckDB in ``/dev/shm`` when it exists (removed at session end).
- Sizes come from ``EVENTTALLY_BENCH_EVENTS``: one count or a comma-separated list, one dataset
  (and one benchmark group) per count. Unset, it is 20,000 events (about 20 MB) when timing is
  disabled, which keeps ``pytest benches/ --benchmark-disable`` well under 30 s so the suites
  double as smoke tests, and 200,000 (about 200 MB) when timing is enabled
  (``--benchmark-enable``, as in ``make bench``). ``EVENTTALLY_BENCH_SEED`` (default 1) picks
  the events.
- ``oracle`` is the pure-Python reference engine's exact answer for a dataset, computed once;
  ``Dataset.totals`` are totals computed from the generated objects themselves.
- Timed rounds per benchmark (when timing is enabled) come from ``EVENTTALLY_BENCH_ROUNDS``
  (default 5; the reference always runs one), read by ``bench_ingest.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from run_ingest import Answer, Input, make_input, normalize_reference, run_reference, scratch_dir

SMOKE_EVENTS = 20_000
"""Default size when timing is disabled: the suites are smoke tests then (well under 30 s)."""
TIMING_EVENTS = 200_000
"""Default size when timing is enabled (``--benchmark-enable``, as ``make bench`` runs)."""


def timing_enabled(config: pytest.Config) -> bool:
    """Whether pytest-benchmark will time (its own rule: disable unless explicitly enabled)."""
    return not (config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))


def sizes(config: pytest.Config) -> list[int]:
    """Dataset sizes: ``EVENTTALLY_BENCH_EVENTS``, else 200,000 when timing and 20,000 when not."""
    raw = os.environ.get("EVENTTALLY_BENCH_EVENTS", "").strip()
    if not raw:
        return [TIMING_EVENTS if timing_enabled(config) else SMOKE_EVENTS]
    try:
        counts = [int(part.replace("_", "")) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise pytest.UsageError(
            f"EVENTTALLY_BENCH_EVENTS must be a count or a comma-separated list, not {raw!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise pytest.UsageError("EVENTTALLY_BENCH_EVENTS must name at least one positive count")
    return counts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One dataset (and one benchmark group) per size, shared by every benchmark."""
    if "segment" in metafunc.fixturenames:
        metafunc.parametrize(
            "segment",
            sizes(metafunc.config),
            indirect=True,
            scope="session",
            ids=lambda n: f"{n}ev",
        )


SEED = int(os.environ.get("EVENTTALLY_BENCH_SEED", "1"))


@dataclass
class Dataset:
    """One generated workload: its benchmark group name and its encoded inputs."""

    name: str
    data: Input

    @property
    def n(self) -> int:
        """Number of events."""
        return self.data.n


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """A private directory in RAM (``/dev/shm``) when available, removed afterwards."""
    path = scratch_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def segment(request: pytest.FixtureRequest, scratch: Path) -> Dataset:
    """The Segment workload of ``n`` events, generated once per session."""
    n: int = request.param
    workdir = scratch / f"segment-{n}"
    workdir.mkdir()
    return Dataset(name=f"segment-{n}-seed{SEED}", data=make_input(n, SEED, workdir))


_ORACLES: dict[str, Answer] = {}


@pytest.fixture(scope="session")
def oracle(segment: Dataset) -> Answer:
    """The reference engine's exact answer for ``segment`` (computed once per dataset)."""
    if segment.name not in _ORACLES:
        _ORACLES[segment.name] = normalize_reference(run_reference(segment.data.array))
    return _ORACLES[segment.name]
