"""Snapshots and crash recovery: atomic snapshot files, fallback, and exact-once WAL replay.

Recovery is checked against real ``eventtally.Engine`` objects: the recovered engines must give
every answer (each filter, aggregation, calculation and percentile) the engines gave before.
"""

from __future__ import annotations

import json
import logging
import os
import random
import struct
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally.durability import (
    RecoveryReport,
    SnapshotFiles,
    WalCorruptionError,
    WalRecord,
    WriteAheadLog,
    ingest_record,
    recover,
    to_ms,
)
from segment_gen import BENCH_FILTER, BENCH_INGEST, batches, generate_events
from tests.support import (
    agg_def,
    filter_def,
    fixed_clock,
    ingest_def,
    last_wal_record_bounds,
    sigkill_child_when,
    snapshot,
)

# --------------------------------------------------------------------------------------------
# A miniature server: prepare -> WAL append -> apply, snapshots tagged with the WAL position
# --------------------------------------------------------------------------------------------

BETA_INGEST = ingest_def(ingest_id="beta-in")  # timestamps at ingest time: received_at matters
BETA_FILTER = filter_def(
    "beta",
    groupings=["@.type"],
    interval=("MINUTE", 1),
    aggregations=[
        agg_def(1, ["COUNT"]),
        agg_def(2, ["SUM", "MIN", "MAX", "AVG", "PERCENTILES"], "@.value"),
        agg_def(3, ["APPROX_COUNT_DISTINCT"], "@.user"),
    ],
)
DEFS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "acme": (BENCH_INGEST, BENCH_FILTER),
    "beta": (BETA_INGEST, BETA_FILTER),
}
T0 = 1_715_680_000.0  # batches arrive over the two hours before the fixed clock


def fresh_engine(org: str) -> eventtally.Engine:
    """An empty engine with the org's definitions and the fixed test clock."""
    ingest, filt = DEFS[org]
    return eventtally.Engine(ingest, [filt], clock=fixed_clock)


def make_engine(org: str, data: bytes | None) -> eventtally.Engine | None:
    """What the server passes to recover(): restore from snapshot bytes or start empty."""
    if org not in DEFS:
        return None
    if data is None:
        return fresh_engine(org)
    return eventtally.Engine.from_bytes(data, clock=fixed_clock)


def beta_batch(i: int, n: int = 40) -> bytes:
    """A small ARRAY_OF_EVENTS batch for org beta (no timestamps: ingest time is used)."""
    rng = random.Random(i)
    events = [
        {
            "type": rng.choice(["track", "page", "screen"]),
            "value": rng.uniform(-5, 100),
            "user": f"u{rng.randrange(300)}",
            "messageId": f"m-{i}-{k}",
        }
        for k in range(n)
    ]
    return json.dumps(events).encode()


class Node:
    """The ingest path a server runs, with the durability layer under it."""

    def __init__(self, root: Path, *, fsync: str = "never", segment_bytes: int = 1 << 20) -> None:
        self.wal = WriteAheadLog(root / "wal", fsync=fsync, segment_bytes=segment_bytes)  # type: ignore[arg-type]
        self.snaps = SnapshotFiles(root / "snapshots", keep=3)
        self.engines = {org: fresh_engine(org) for org in DEFS}

    def ingest(self, org: str, body: bytes, received_at: float) -> int:
        """prepare (validates), append to the WAL, apply; returns the WAL seq."""
        ingest_id = DEFS[org][0]["id"]
        engine = self.engines[org]
        prepared = engine.prepare(body, ingest_id=ingest_id, received_at=received_at)
        seq = self.wal.append(WalRecord(org, body, ingest_id, to_ms(received_at)))
        engine.apply(prepared)
        return seq

    def snapshot(self, org: str) -> int:
        """Snapshot an org at the current WAL position (single-threaded: an exact cut)."""
        seq = self.wal.next_seq - 1
        self.snaps.write(org, self.engines[org].to_bytes(), seq)
        return seq


@pytest.fixture(scope="module")
def acme_batches() -> list[bytes]:
    """Segment-shaped 300-event batches for org acme (6,000 events)."""
    return batches(generate_events(6000, seed=7), size=300)


def run_workload(node: Node, acme: list[bytes], *, snapshots_at: dict[int, str]) -> list[int]:
    """Interleave acme and beta batches; snapshot the named org after the given step."""
    seqs = []
    for step in range(len(acme)):
        seqs.append(node.ingest("acme", acme[step], T0 + 60 * step))
        seqs.append(node.ingest("beta", beta_batch(step), T0 + 95 * step + 0.123))
        if step in snapshots_at:
            node.snapshot(snapshots_at[step])
    return seqs


def recovered(root: Path, **kwargs: Any) -> tuple[RecoveryReport[eventtally.Engine], WriteAheadLog]:
    """Reopen a node's directories as a restarted process would and recover."""
    wal = WriteAheadLog(root / "wal")
    store = SnapshotFiles(root / "snapshots")
    return recover(store, wal, make_engine, **kwargs), wal


# --------------------------------------------------------------------------------------------
# Snapshot files
# --------------------------------------------------------------------------------------------


def test_snapshot_file_layout_and_roundtrip(tmp_path: Path) -> None:
    """write() stores engine bytes under a checksummed header named snap-<org>-<seq>.bin."""
    store = SnapshotFiles(tmp_path)
    path = store.write("acme", b"ENGINE-BYTES", 42)
    assert path.name == "snap-acme-00000000000000000042.bin"
    data = path.read_bytes()
    magic, version, org_len, _r, seq, created, length = struct.unpack_from("<8sIHHQqQ", data)
    assert (magic, version, org_len, seq, length) == (b"ETSNAPv\x01", 1, 4, 42, 12)
    assert abs(created / 1000 - time.time()) < 60
    assert data[40:44] == b"acme" and data[44:56] == b"ENGINE-BYTES"
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    assert store.latest_valid("acme") == (b"ENGINE-BYTES", 42)
    assert store.latest_valid("nobody") is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_snapshot_store_keeps_the_newest(tmp_path: Path) -> None:
    """Only the `keep` newest snapshots of an organization remain; other orgs are untouched."""
    store = SnapshotFiles(tmp_path, keep=2)
    store.write("b", b"b1", 1)
    for seq in (5, 9, 3, 12):
        store.write("a", b"a%d" % seq, seq)
    assert [s.wal_seq for s in store.files("a")] == [9, 12]
    assert [s.wal_seq for s in store.files("b")] == [1]
    assert store.latest_valid("a") == (b"a12", 12)
    assert store.orgs() == {"a", "b"}


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "magic", "empty", "wrong-org"])
def test_corrupt_newest_snapshot_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """A damaged newest snapshot is skipped with a WARNING; the previous one is returned."""
    store = SnapshotFiles(tmp_path)
    store.write("o", b"old state", 10)
    newest = store.write("o", b"new state" * 100, 20)
    data = bytearray(newest.read_bytes())
    if damage == "bitflip":
        data[100] ^= 0x04
    elif damage == "truncate":
        data = data[:-7]
    elif damage == "magic":
        data[0] = ord("X")
    elif damage == "empty":
        data = bytearray()
    else:  # a file renamed to another org's name
        other = store.write("p", b"new state" * 100, 20)
        data = bytearray(other.read_bytes())
    newest.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="eventtally.snapshots")
    assert store.latest_valid("o") == (b"old state", 10)
    assert any("falling back" in r.getMessage() for r in caplog.records)
    assert newest.exists()  # kept for inspection


def test_no_valid_snapshot_gives_none(tmp_path: Path) -> None:
    """When every snapshot is damaged, latest_valid returns None (start from the WAL)."""
    store = SnapshotFiles(tmp_path)
    for seq in (1, 2):
        path = store.write("o", b"x" * 50, seq)
        path.write_bytes(path.read_bytes()[:30])
    assert store.latest_valid("o") is None


def test_org_ids_are_encoded_and_never_confused(tmp_path: Path) -> None:
    """Org ids with dashes, slashes and non-ASCII map to distinct, parseable file names."""
    store = SnapshotFiles(tmp_path)
    orgs = ["a", "a-b", "a-00000000000000000001", "x/y", "ünï", "..", "100%"]
    for i, org in enumerate(orgs):
        store.write(org, org.encode(), i + 1)
    assert store.orgs() == set(orgs)
    for i, org in enumerate(orgs):
        assert store.latest_valid(org) == (org.encode(), i + 1)
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())


def test_interrupted_snapshot_write_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that dies before its rename leaves no new file; the old snapshot stays latest."""
    store = SnapshotFiles(tmp_path)
    store.write("o", b"good", 1)

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write("o", b"newer", 2)
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / ".snap-o-00000000000000000003.bin.99.1.tmp").write_bytes(b"half")  # a crash
    store = SnapshotFiles(tmp_path)
    assert store.latest_valid("o") == (b"good", 1)
    assert [p.name for p in tmp_path.iterdir()] == ["snap-o-00000000000000000001.bin"]


def test_safe_wal_seq_is_the_oldest_kept_snapshot(tmp_path: Path) -> None:
    """safe_wal_seq: minimum over orgs of the oldest kept snapshot; 0 if an org has none."""
    store = SnapshotFiles(tmp_path, keep=2)
    for seq in (10, 20, 30):
        store.write("a", b"a", seq)
    store.write("b", b"b", 25)
    assert store.safe_wal_seq(["a"]) == 20
    assert store.safe_wal_seq(["a", "b"]) == 20
    store.write("b", b"b", 40)
    store.write("b", b"b", 50)
    assert store.safe_wal_seq(["a", "b"]) == 20
    assert store.safe_wal_seq(["a", "b", "new-org"]) == 0
    assert store.safe_wal_seq([]) == 0


# --------------------------------------------------------------------------------------------
# Recovery
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pipelined", "sequential", "one-worker"])
def test_recovery_equals_the_state_before_the_crash(
    tmp_path: Path, acme_batches: list[bytes], mode: str
) -> None:
    """Snapshot + WAL replay rebuilds every answer of every org exactly, nothing counted twice."""
    node = Node(tmp_path, segment_bytes=256 << 10)
    seqs = run_workload(node, acme_batches, snapshots_at={5: "acme", 9: "beta", 14: "acme"})
    before = {org: snapshot(engine) for org, engine in node.engines.items()}
    # crash: no close, no final snapshot
    kwargs: dict[str, Any] = {}
    if mode == "sequential":
        kwargs["apply_record"] = ingest_record
    elif mode == "one-worker":
        kwargs["workers"] = 1
    report, wal = recovered(tmp_path, **kwargs)
    assert set(report.engines) == {"acme", "beta"}
    for org, engine in report.engines.items():
        assert snapshot(engine) == before[org], org
    snap_acme, snap_beta = report.snapshot_seqs["acme"], report.snapshot_seqs["beta"]
    assert (snap_acme, snap_beta) == (seqs[29], seqs[19])  # after steps 14 and 9
    acme_after = [s for s in seqs[0::2] if s > snap_acme]
    beta_after = [s for s in seqs[1::2] if s > snap_beta]
    assert report.records_replayed == len(acme_after) + len(beta_after)
    assert report.records_skipped == len(seqs) - report.records_replayed
    assert report.events == 300 * len(acme_after) + 40 * len(beta_after)
    assert report.records_failed == report.snapshots_rejected == 0
    assert not report.torn_tail_cut and not report.gaps
    assert report.events_per_second > 0 and report.records_per_second > 0
    assert "replayed" in report.summary()
    assert wal.next_seq == seqs[-1] + 1
    wal.close()


def test_recovery_of_a_clean_shutdown_replays_nothing(
    tmp_path: Path, acme_batches: list[bytes]
) -> None:
    """Snapshots taken at shutdown cover the whole WAL: recovery replays no record."""
    node = Node(tmp_path)
    run_workload(node, acme_batches[:5], snapshots_at={})
    before = {org: snapshot(engine) for org, engine in node.engines.items()}
    for org in DEFS:
        node.snapshot(org)
    node.wal.close()
    report, wal = recovered(tmp_path)
    assert report.records_replayed == 0 and report.records_skipped == 10
    assert {org: snapshot(e) for org, e in report.engines.items()} == before
    wal.close()


def test_recovery_falls_back_past_a_corrupt_snapshot(
    tmp_path: Path, acme_batches: list[bytes]
) -> None:
    """With the newest snapshot corrupt, the older one plus more WAL gives the same state."""
    node = Node(tmp_path)
    run_workload(node, acme_batches[:12], snapshots_at={3: "acme", 8: "acme"})
    before = snapshot(node.engines["acme"])
    newest = node.snaps.files("acme")[-1].path
    newest.write_bytes(newest.read_bytes()[:-100])
    report, wal = recovered(tmp_path)
    assert report.snapshot_seqs["acme"] == 8  # after step 3: seqs 1..8
    assert snapshot(report.engines["acme"]) == before
    wal.close()


def test_recovery_falls_back_when_the_engine_rejects_a_snapshot(
    tmp_path: Path, acme_batches: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot that verifies but that the engine refuses (SnapshotError) is skipped."""
    node = Node(tmp_path)
    run_workload(node, acme_batches[:8], snapshots_at={2: "acme", 5: "acme"})
    before = snapshot(node.engines["acme"])
    newest_seq = node.snaps.files("acme")[-1].wal_seq
    newest_bytes = node.snaps.read(node.snaps.files("acme")[-1])

    def picky(org: str, data: bytes | None) -> eventtally.Engine | None:
        if data == newest_bytes:
            return eventtally.Engine.from_bytes(b"garbage")  # raises SnapshotError
        return make_engine(org, data)

    caplog.set_level(logging.WARNING, logger="eventtally.recovery")
    report = recover(SnapshotFiles(tmp_path / "snapshots"), WriteAheadLog(tmp_path / "wal"), picky)
    assert report.snapshots_rejected == 1
    assert report.snapshot_seqs["acme"] < newest_seq
    assert snapshot(report.engines["acme"]) == before
    assert any("rejected" in r.getMessage() for r in caplog.records)


def test_recovery_counts_records_that_fail_to_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A logged batch the engine refuses is counted and logged; recovery carries on."""
    node = Node(tmp_path)
    node.ingest("beta", beta_batch(1), T0)
    node.wal.append(WalRecord("beta", b'[{"broken": ', "beta-in", to_ms(T0)))
    node.wal.append(WalRecord("beta", beta_batch(2), "no-such-ingest", to_ms(T0)))
    node.ingest("beta", beta_batch(3), T0 + 60)
    before = snapshot(node.engines["beta"])
    caplog.set_level(logging.WARNING, logger="eventtally.recovery")
    report, wal = recovered(tmp_path)
    assert (report.records_replayed, report.records_failed) == (2, 2)
    assert report.events == 80
    assert snapshot(report.engines["beta"]) == before
    assert sum("failed and was skipped" in r.getMessage() for r in caplog.records) == 2
    wal.close()


def test_recovery_cuts_a_torn_tail_and_reports_it(
    tmp_path: Path, acme_batches: list[bytes]
) -> None:
    """A batch torn mid-write (never acknowledged) is cut; the rest is recovered exactly."""
    node = Node(tmp_path)
    for i in range(6):
        node.ingest("beta", beta_batch(i), T0 + 60 * i)
    expected = snapshot(node.engines["beta"])
    node.ingest("beta", beta_batch(99), T0 + 999)  # the one the crash tears
    seg = node.wal.segments()[-1].path
    _start, end = last_wal_record_bounds(seg)
    os.truncate(seg, end - 50)
    report, wal = recovered(tmp_path)
    assert report.torn_tail_cut and report.torn_tail is not None
    assert report.records_replayed == 6
    assert snapshot(report.engines["beta"]) == expected
    assert "torn tail" in report.summary()
    wal.close()


def test_recovery_refuses_a_corrupt_log(tmp_path: Path) -> None:
    """Damage in the middle of the WAL stops recovery instead of silently losing batches."""
    node = Node(tmp_path, segment_bytes=4096)
    for i in range(12):
        node.ingest("beta", beta_batch(i, 10), T0 + i)
    older = node.wal.segments()[0].path
    data = bytearray(older.read_bytes())
    data[200] ^= 0x40
    older.write_bytes(bytes(data))
    with pytest.raises(WalCorruptionError):
        recovered(tmp_path)


def test_recovery_skips_orgs_that_no_longer_exist(tmp_path: Path) -> None:
    """Records and snapshots of an org make_engine does not know are skipped and counted."""
    node = Node(tmp_path)
    node.ingest("beta", beta_batch(1), T0)
    node.wal.append(WalRecord("deleted-org", b"[]", None, to_ms(T0)))
    node.snaps.write("deleted-org", b"whatever", 1)
    node.wal.append(WalRecord("deleted-org", b"[]", None, to_ms(T0)))
    report, wal = recovered(tmp_path, org_ids=["acme"])
    assert set(report.engines) == {"acme", "beta"}
    assert report.records_orphaned == 2 and report.records_replayed == 1
    wal.close()


def test_recovery_reports_a_wal_gap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Deleting WAL a snapshot still needs is reported (ERROR) as a gap for that org."""
    node = Node(tmp_path, segment_bytes=4096)
    node.ingest("beta", beta_batch(0, 10), T0)
    node.snapshot("beta")
    for i in range(1, 15):
        node.ingest("beta", beta_batch(i, 10), T0 + i)
    node.wal.truncate_before(10**9)  # wrong: the snapshot only covers seq 1
    first = node.wal.first_seq
    caplog.set_level(logging.ERROR, logger="eventtally.recovery")
    report, wal = recovered(tmp_path)
    assert report.gaps == {"beta": (2, first - 1)}
    assert any("lost" in r.getMessage() for r in caplog.records)
    wal.close()


def test_recovery_reports_a_gap_when_no_snapshot_is_usable(tmp_path: Path) -> None:
    """All snapshots damaged and the WAL start deleted: the org is rebuilt and the gap reported."""
    node = Node(tmp_path, segment_bytes=4096)
    for i in range(15):
        node.ingest("beta", beta_batch(i, 10), T0 + i)
        if i == 8:
            node.snapshot("beta")
    node.wal.truncate_before(node.snaps.safe_wal_seq(["beta"]) + 1)
    node.snaps.files("beta")[0].path.write_bytes(b"junk")
    report, wal = recovered(tmp_path)
    assert "beta" in report.engines and "beta" not in report.snapshot_seqs
    assert report.gaps == {"beta": (1, wal.first_seq - 1)}
    wal.close()


def test_recovery_moves_the_wal_counter_past_every_snapshot(tmp_path: Path) -> None:
    """If the WAL was lost, new records still get numbers above every snapshot's."""
    store = SnapshotFiles(tmp_path / "snapshots")
    store.write("beta", fresh_engine("beta").to_bytes(), 500)
    wal = WriteAheadLog(tmp_path / "wal")
    report = recover(store, wal, make_engine)
    assert report.snapshot_seqs == {"beta": 500}
    assert wal.append(WalRecord("beta", beta_batch(1), "beta-in", to_ms(T0))) == 501
    wal.close()


def test_wal_and_snapshot_truncation_keep_recovery_exact(
    tmp_path: Path, acme_batches: list[bytes]
) -> None:
    """Truncating the WAL at safe_wal_seq + 1 after each snapshot never changes recovery."""
    node = Node(tmp_path, segment_bytes=200 << 10)
    for step in range(len(acme_batches)):
        node.ingest("acme", acme_batches[step], T0 + 60 * step)
        node.ingest("beta", beta_batch(step), T0 + 60 * step)
        if step % 4 == 3:
            for org in DEFS:
                node.snapshot(org)
            node.wal.truncate_before(node.snaps.safe_wal_seq(DEFS) + 1)
    assert node.wal.first_seq > 1  # something was deleted
    before = {org: snapshot(e) for org, e in node.engines.items()}
    for org in DEFS:  # even with the newest snapshots corrupt, the fallback is complete
        newest = node.snaps.files(org)[-1].path
        newest.write_bytes(b"junk")
    report, wal = recovered(tmp_path)
    assert not report.gaps
    assert {org: snapshot(e) for org, e in report.engines.items()} == before
    wal.close()


# --------------------------------------------------------------------------------------------
# A real crash: SIGKILL while ingesting and snapshotting
# --------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, random, sys
    import eventtally
    from eventtally.durability import SnapshotFiles, WalRecord, WriteAheadLog, to_ms

    root, start = sys.argv[1], int(sys.argv[2])
    INGEST = {"id": "in", "name": "i", "schema": "ARRAY_OF_EVENTS",
              "timestamp": {"source": "INGEST"}}
    FILTER = {"id": "f", "name": "f", "filter": "", "groupingItems": [], "intervalType": "HOUR",
              "intervalCount": 1, "aggregations": [{"id": 1, "name": "n",
              "calculations": ["COUNT"], "calculationField": None, "subFilter": None}]}
    wal = WriteAheadLog(root + "/wal", fsync="always", segment_bytes=64 << 10)
    snaps = SnapshotFiles(root + "/snapshots")
    got = snaps.latest_valid("o")
    engine = (eventtally.Engine.from_bytes(got[0], clock=lambda: 1715688000.0) if got
              else eventtally.Engine(INGEST, [FILTER], clock=lambda: 1715688000.0))
    if got:
        for rec in wal.replay(got[1]):
            engine.ingest(rec.payload, ingest_id=rec.ingest_id, received_at=rec.received_at)
    elif start:
        for rec in wal.replay():
            engine.ingest(rec.payload, ingest_id=rec.ingest_id, received_at=rec.received_at)
    k = start
    while True:
        n = random.Random(k).randrange(1, 200)
        body = json.dumps([{"i": j, "pad": "x" * 50} for j in range(n)]).encode()
        prepared = engine.prepare(body, ingest_id="in", received_at=1715680000.0 + k)
        seq = wal.append(WalRecord("o", body, "in", to_ms(1715680000.0 + k)))
        engine.apply(prepared)
        print(seq, n, flush=True)
        if k % 7 == 6:  # _FIRST_SNAPSHOT_BATCH in the test
            snaps.write("o", engine.to_bytes(), wal.next_seq - 1)
        k += 1
    """
)


_FIRST_SNAPSHOT_BATCH = 6  # the child snapshots after batches 6, 13, 20, ...


@pytest.mark.slow
def test_sigkill_while_ingesting_recovers_every_acknowledged_event(tmp_path: Path) -> None:
    """A child ingesting through WAL + snapshots is SIGKILLed three times; after each, recovery
    counts exactly the events of the batches in the log: every acknowledged one, none twice."""
    rng = random.Random(11)
    acknowledged: dict[int, int] = {}
    k = 0
    from_snapshot_and_log = 0
    for round_no in range(3):
        # The kill comes at a random moment, but only once the child has logged a batch after
        # its first snapshot (written after batch 6; line i is batch k + i): on a slow disk
        # (fsync "always") a fixed delay may end before any snapshot exists, and no round would
        # recover from snapshot + log.
        lines = sigkill_child_when(
            [sys.executable, "-c", CHILD, str(tmp_path), str(k)],
            rng.uniform(0.1, 0.5),
            lambda seen, k=k: k + len(seen) - 1 > _FIRST_SNAPSHOT_BATCH,
            f"round {round_no}",
        )
        for line in lines:
            seq, n = map(int, line.split())
            acknowledged[seq] = n
        wal = WriteAheadLog(tmp_path / "wal")
        logged = {r.seq: r for r in wal.replay()}
        assert set(acknowledged) <= set(logged)
        assert all(len(json.loads(logged[s].payload)) == n for s, n in acknowledged.items())
        expected = sum(len(json.loads(r.payload)) for r in logged.values())
        report = recover(SnapshotFiles(tmp_path / "snapshots"), wal, _child_engine)
        engine = report.engines["o"]
        got = sum(r["value"] for r in engine.results(_COUNT_QUERY))
        assert got == expected
        assert report.snapshot_seqs, f"round {round_no}: no snapshot, yet batch 6 was written"
        from_snapshot_and_log += bool(report.records_replayed)
        k = (max(r.received_at_ms for r in logged.values()) - to_ms(1715680000.0)) // 1000 + 1
        wal.close()
    # No record follows the newest snapshot only when a kill fell between a snapshot write and
    # the next append, a small part of each seven-batch cycle: not in all three rounds.
    assert from_snapshot_and_log  # the snapshot + replay path was exercised


_CHILD_INGEST = {
    "id": "in",
    "name": "i",
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": {"source": "INGEST"},
}
_CHILD_FILTER = filter_def("f", interval=("HOUR", 1))
_COUNT_QUERY = {"filterId": "f", "aggregationId": 1, "calculation": "COUNT"}


def _child_engine(org: str, data: bytes | None) -> eventtally.Engine:
    clock: Callable[[], float] = lambda: 1715688000.0  # noqa: E731
    if data is not None:
        return eventtally.Engine.from_bytes(data, clock=clock)
    return eventtally.Engine(_CHILD_INGEST, [_CHILD_FILTER], clock=clock)
