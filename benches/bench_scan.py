"""Checks of the scanner benchmark's inputs and runner (issue 13; ``run_scan_ab.py``).

What this module guarantees:

- The second-shaped events (``reshape_events.reshape``) really are differently shaped (reverse
  member order, deeper ``context``, longer strings with escapes and non-ASCII text) and yet give
  exactly the answer of ``BENCH_FILTER`` that the original events give, and that answer matches
  the totals of the generated objects. So a benchmark on either shape measures the same work
  with different skipping.
- ``run_scan_ab.py`` runs end to end in a small configuration (the build against itself), in a
  subprocess with a hard time limit, and reports that every answer agreed; its reading of
  ``callgrind_annotate`` output takes each function's own inclusive line, not a call site.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reshape_events import reshape
from run_ingest import check_totals, normalize_eventtally, run_eventtally, totals_of
from segment_gen import encode_array, generate_events

HERE = Path(__file__).resolve().parent


def test_reshaped_events_differ_in_shape_but_not_in_answer() -> None:
    events = generate_events(600, seed=3)
    shaped = reshape(events)
    assert reshape(events) == shaped  # deterministic
    first, again = events[0], shaped[0]
    assert list(again) == list(reversed(list(first)))
    assert "traits" in again["context"] and "wrapper" in again["context"]
    raw = encode_array(shaped)
    assert len(raw) > 1.3 * len(encode_array(events))
    assert b"\\u" in raw or b'\\"' in raw
    want = normalize_eventtally(run_eventtally(encode_array(events)))
    got = normalize_eventtally(run_eventtally(raw))
    assert got.columns == want.columns
    assert check_totals(got, totals_of(events)) == []


def test_ab_runner_agrees_with_itself() -> None:
    script = [sys.executable, str(HERE / "run_scan_ab.py"), "--base", sys.executable]
    done = subprocess.run(
        [*script, "--events", "400", "--rounds", "1", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "answers: all equal" in done.stdout
    assert done.stdout.count("new/base") == 4


def test_ab_child_reports_time_and_answer(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(encode_array(generate_events(50, seed=4)))
    done = subprocess.run(
        [sys.executable, str(HERE / "run_scan_ab.py"), "--child", str(path), "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["seconds"] > 0
    assert (
        sum(v for _, v in out["answer"]["count"]) == totals_of(generate_events(50, seed=4)).matched
    )


def test_callgrind_parts_come_from_each_functions_own_line() -> None:
    from run_scan_ab import PARTS, parts_of

    obj = "[/venv/eventtally/_core.so]"
    text = "\n".join(
        [
            "127,527,268 (100.0%)  ???:eventtally_core::engine::Plan::prepare " + obj,
            "22,356,180 (17.5%)  => ???:eventtally_core::batch::Scanner<S>::skip_container (55x)",
            " 22,356,031 (17.53%)  ???:eventtally_core::batch::Scanner<S>::skip_container " + obj,
            " 16,211,672 (12.71%)  ???:eventtally_core::engine::update " + obj,
            "  3,876,000 ( 3.04%)  ???:eventtally_core::time::iso8601::parse_iso8601 " + obj,
        ]
    )
    got = parts_of(text)
    assert set(got) == set(PARTS)
    assert got["prepare"] == 127_527_268
    assert got["skip_container"] == 22_356_031  # not the call site above it
    assert got["update"] == 16_211_672
    assert got["timestamp"] == 3_876_000
    assert got["extract_at"] == 0 and got["utf8"] == 0  # absent: inlined everywhere
