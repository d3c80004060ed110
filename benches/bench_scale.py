"""Smoke test of ``run_scale.py`` (issue 12): the script runs end to end on a tiny workload and
its answer checks pass (threads=2 and one-by-one ingestion equal threads=1 for every query). No
timing is asserted; the figures come from running the script itself."""

from __future__ import annotations

import pytest

import run_scale


def test_run_scale_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_scale.main(
        ["--files", "3", "--events-per-file", "400", "--repeat", "1", "--no-dask"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "equal threads=1 for every query" in out
    assert "peak memory growth with 2 threads" in out
