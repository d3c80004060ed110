"""Issue 13, the file half: JSON array files (one line and multi-line) read through the reused
buffer give exactly what ``ingest`` of the same bytes gives, with one thread and with several,
and a file truncated while it is read fails with a clear error instead of crashing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally import EventtallyIOError, JsonError

T0 = 1_715_644_800  # 2024-05-14T00:00:00Z

INGEST = {
    "id": "i",
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": {"source": "PROPERTY", "path": "@.receivedAt", "format": "ISO_8601"},
}
FILTER = {
    "id": "f",
    "filter": "@.type in ['track','page']",
    "groupings": ["@.type", "@.context.device.type"],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {"id": 1, "calculations": ["COUNT"]},
        {"id": 2, "calculations": ["SUM", "MIN", "MAX"], "calculationField": "@.properties.v"},
        {"id": 3, "calculations": ["APPROX_COUNT_DISTINCT"], "calculationField": "@.user"},
    ],
}
QUERIES = [
    {"filterId": "f", "aggregationId": 1, "calculation": "COUNT"},
    {"filterId": "f", "aggregationId": 2, "calculation": "SUM"},
    {"filterId": "f", "aggregationId": 2, "calculation": "MIN"},
    {"filterId": "f", "aggregationId": 2, "calculation": "MAX"},
    {"filterId": "f", "aggregationId": 3, "calculation": "APPROX_COUNT_DISTINCT"},
]
N = 40_000
MATCHED = sum(1 for i in range(N) if i % 3 != 2)
WINDOW = {"from": "2024-05-13T00:00:00Z", "to": "2024-05-16T00:00:00Z"}


def _events(n: int, seed: int = 3) -> list[str]:
    """Compact events of about 1 KB with strings that look like structure ("},{" and escapes)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        event = {
            "type": ("track", "page", "identify")[i % 3],
            "user": f"u{rng.randrange(5000)}",
            "note": 'x},{"y":[1,' + 'é\\"' * rng.randrange(5) + "z" * rng.randrange(600),
            "context": {"device": {"type": ("ios", "web")[i % 2]}, "deep": [{"a": [{"b": i}]}]},
            "properties": {"v": rng.randrange(1000) / 8},
            "receivedAt": f"2024-05-14T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:"
            f"{i % 60:02d}.000Z",
        }
        out.append(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
    return out


def _answers(engine: eventtally.Engine) -> list[list[dict[str, Any]]]:
    return [engine.results({**q, **WINDOW}) for q in QUERIES]


def _engine() -> eventtally.Engine:
    return eventtally.Engine(INGEST, [FILTER], clock=lambda: T0)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same ~20 MiB of events as NDJSON, a one-line array and a multi-line array."""
    lines = _events(N)
    d = tmp_path_factory.mktemp("arrays")
    out = {
        "ndjson": d / "e.ndjson",
        "array": d / "e.json",
        "multiline": d / "multi.json",
    }
    out["ndjson"].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out["array"].write_text("[" + ",".join(lines) + "]", encoding="utf-8")
    out["multiline"].write_text("[\n  " + ",\n  ".join(lines) + "\n]\n", encoding="utf-8")
    assert out["array"].stat().st_size > 2 * (8 << 20)  # several 8 MiB chunks
    return out


@pytest.mark.parametrize("form", ["array", "multiline"])
def test_array_files_equal_ingest_of_the_same_bytes(files: dict[str, Path], form: str) -> None:
    """The reused-buffer path, cut at guessed separators, answers exactly as one in-memory batch."""
    data = files[form].read_bytes()
    memory = _engine()
    memory.ingest(data)
    want = _answers(memory)
    assert sum(r["value"] for r in want[0]) == MATCHED
    from_file = _engine()
    stats = from_file.ingest_file(files[form])
    assert stats.events == N
    assert _answers(from_file) == want
    ndjson = _engine()
    ndjson.ingest_file(files["ndjson"])
    assert _answers(ndjson) == want


@pytest.mark.parametrize("form", ["array", "multiline", "ndjson"])
def test_array_and_ndjson_files_split_between_threads(
    tmp_path: Path, files: dict[str, Path], form: str
) -> None:
    """A file past the split size (32 MiB) is parsed in ranges on two threads; same answer."""
    src = files[form].read_bytes()
    if form == "ndjson":
        big = src * 2
    else:
        body = src.strip()[1:-1].strip()
        sep = b",\n  " if form == "multiline" else b","
        big = b"[" + body + sep + body + b"]"
    path = tmp_path / ("big.ndjson" if form == "ndjson" else "big.json")
    path.write_bytes(big)
    assert len(big) > 32 << 20
    memory = _engine()
    memory.ingest_file_bytes(big, path.name)
    want = _answers(memory)
    parallel = _engine()
    stats = parallel.ingest_file(path, threads=2)
    assert stats.events == 2 * N
    got = _answers(parallel)
    # Sums may differ in the last bits (the order of a merge); counts, min, max are exact.
    assert got[0] == want[0] and got[2:] == want[2:]
    assert [[r["groupings"] for r in c] for c in got[1:2]] == [[r["groupings"] for r in want[1]]]
    for a, b in zip(got[1], want[1], strict=True):
        assert a["value"] == pytest.approx(b["value"], rel=1e-12)


def test_array_file_error_offset_is_the_batch_offset(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """A malformed byte deep in the third chunk is reported at the same offset as by ``ingest``."""
    data = bytearray(files["multiline"].read_bytes())
    at = data.index(b'"type"', (17 << 20) + 12345)
    data[at] = ord("#")
    with pytest.raises(JsonError) as memory:
        _engine().ingest(bytes(data))
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    with pytest.raises(JsonError) as from_file:
        _engine().ingest_file(path)
    assert from_file.value.offset == memory.value.offset == at
    with pytest.raises(JsonError) as threaded:
        _engine().ingest_files([path, path], threads=2)
    assert threaded.value.offset == at


@pytest.mark.parametrize("name", ["t.json", "t.ndjson"])
def test_file_truncated_while_read_is_a_clear_error(
    tmp_path: Path, files: dict[str, Path], name: str
) -> None:
    """After the first chunk the file loses half its bytes: an IO error says so, nothing applied."""
    src = files["array" if name.endswith(".json") else "ndjson"]
    path = tmp_path / name
    path.write_bytes(src.read_bytes())
    size = path.stat().st_size
    calls = []

    def shrink(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 1:
            with open(path, "r+b") as f:
                f.truncate(size // 2)

    engine = _engine()
    with pytest.raises(EventtallyIOError, match="changed while it was read"):
        engine.ingest_file(path, progress=shrink)
    assert engine.results({**QUERIES[0], **WINDOW}) == []


def test_truncation_race_never_crashes_the_process(tmp_path: Path, files: dict[str, Path]) -> None:
    """A thread truncating the file at a random moment: the child ends with a clear error or a
    consistent answer, never a signal (a truncated memory map would raise SIGBUS)."""
    script = textwrap.dedent(
        f"""
        import shutil, sys, threading, time, random
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        import eventtally
        from tests.test_file_reading import INGEST, FILTER
        src, dst = sys.argv[1], sys.argv[2]
        outcomes = set()
        for i in range(6):
            shutil.copyfile(src, dst)
            e = eventtally.Engine(INGEST, [FILTER], clock=lambda: 1715644800)
            delay = random.Random(i).random() * 0.05
            def cut():
                time.sleep(delay)
                with open(dst, "r+b") as f:
                    f.truncate(1000)
            t = threading.Thread(target=cut)
            t.start()
            try:
                s = e.ingest_file(dst)
                outcomes.add("ok" if s.events == {N} else "partial!")
            except (eventtally.EventtallyIOError, eventtally.JsonError) as exc:
                outcomes.add(type(exc).__name__)
            t.join()
        print(sorted(outcomes))
        sys.exit(1 if "partial!" in outcomes else 0)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(files["array"]), str(tmp_path / "race.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout
