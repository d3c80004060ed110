"""Smoke test of ``run_vs_duckdb.py`` (issue 13): the script runs end to end on a tiny workload
(both generators, every file form, this build only) and its answer checks pass: every
eventtally answer equals DuckDB's and the generated objects' totals. No timing is asserted."""

from __future__ import annotations

import importlib.util

import pytest

import run_vs_duckdb


@pytest.mark.skipif(importlib.util.find_spec("duckdb") is None, reason="duckdb not installed")
def test_run_vs_duckdb_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_vs_duckdb.main(["--events", "1500", "--repeat", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "All answers agree" in out
    assert "shaped this array-multiline t=all" in out
