"""Checks of the scanner benchmark's inputs and runner (issue 13; ``run_scan_ab.py``).

What this module guarantees:

- The second-shaped events (``shaped_gen.generate_events``) really are differently shaped from
  ``segment_gen``'s (other field order, a deeper ``context``, longer strings with escapes and
  non-ASCII text), are deterministic, and the answer of ``BENCH_FILTER`` on each shape matches
  the totals of its generated objects. So a benchmark on either shape measures the same
  workload with different skipping.
- ``run_scan_ab.py`` runs end to end in a small configuration (the build against itself), in a
  subprocess with a hard time limit, and reports that every answer agreed; its reading of
  ``callgrind_annotate`` output takes each function's own inclusive line, not a call site.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import shaped_gen
from run_ingest import check_totals, normalize_eventtally, run_eventtally, totals_of
from segment_gen import encode_array, generate_events

HERE = Path(__file__).resolve().parent


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_second_shape_differs_in_shape_and_answers_its_own_totals() -> None:
    """shaped_gen: other order, deeper context, longer escaped strings; answers match totals."""
    events = generate_events(600, seed=3)
    shaped = shaped_gen.generate_events(600, seed=3)
    assert shaped_gen.generate_events(600, seed=3) == shaped  # deterministic
    # Other field order: the type first and the timestamps last, unlike Segment's order.
    assert next(iter(shaped[0])) == "type" and list(shaped[0])[-1] == "receivedAt"
    assert next(iter(events[0])) != "type"
    # A deeper context (six levels below it against at most two).
    assert min(_depth(e["context"]) for e in shaped) > max(_depth(e["context"]) for e in events)
    raw = encode_array(shaped)
    assert len(raw) / len(shaped) > 1.5 * len(encode_array(events)) / len(events)
    assert b"\\u" in raw or b'\\"' in raw
    assert any(b >= 0x80 for b in raw)
    for evs, body in ((events, encode_array(events)), (shaped, raw)):
        got = normalize_eventtally(run_eventtally(body))
        assert check_totals(got, totals_of(evs)) == []


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
    # A newer build's timestamp parser is found under its own name.
    newer = parts_of(
        text
        + "\n  1,512,000 ( 1.2%)  ???:eventtally_core::time::iso8601::Iso8601Parser::parse "
        + obj
    )
    assert newer["timestamp"] == 1_512_000
