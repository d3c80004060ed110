"""Crash recovery with real processes and real signals: SIGKILL under load, torn WAL tails,
corrupt snapshots, SIGTERM, ingest-time buckets.  Loopback only; every wait is bounded.

The exactness invariant: every batch attempt carries its own ``event`` tag, so its COUNT can
be read back on its own.  An attempt answered 200 must be counted exactly once; an attempt that
got no answer (the server died) is *in doubt* and must be counted once or not at all; nothing
else may appear.  Like Segment, the client retries an in-doubt batch (under a new tag) until it
gets a 200.
"""

from __future__ import annotations

import http.client
import itertools
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ops_support import (
    INGEST,
    KEY,
    NOW_INGEST,
    PER_MINUTE,
    ServerProcess,
    batch,
    counts_by_tag,
    post,
    results,
    write_config,
)
from tests.support import last_wal_record_bounds

pytestmark = pytest.mark.slow

THREADS = 6
ROUNDS = 4


@dataclass
class Ledger:
    """What the clients know: events per acknowledged and per in-doubt attempt tag."""

    acked: dict[str, int] = field(default_factory=dict)
    in_doubt: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def wait_for_acks(self, more: int, timeout: float = 60.0) -> None:
        """Returns once ``more`` further attempts have been acknowledged.

        A crash test kills at a moment defined by progress, not by the clock: a fixed sleep
        reaches less of the load on a slow (fsync-bound) disk and tests a different state."""
        with self.lock:
            target = len(self.acked) + more
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = len(self.acked)
            assert not self.errors, self.errors
            if got >= target:
                return
            assert time.monotonic() < deadline, (
                f"{target - got} of {more} acks missing after {timeout} s"
            )
            time.sleep(0.01)


class Loader:
    """``THREADS`` clients posting tagged batches of 250-300 events over keep-alive connections;
    they follow the server across restarts (``ledger.port``)."""

    def __init__(self, ledger: Ledger, prefix: str = "b") -> None:
        self.ledger = ledger
        self.prefix = prefix
        self._ids = itertools.count()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float = 60.0) -> None:
        self.ledger.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a client did not finish"
        assert not self.ledger.errors, self.ledger.errors

    def _run(self, worker: int) -> None:
        led = self.ledger
        rng = random.Random(worker)
        conn: http.client.HTTPConnection | None = None
        port = 0
        try:
            while not led.stop.is_set():
                n = rng.randint(250, 300)
                tag = f"{self.prefix}{next(self._ids)}"
                body = batch(tag, n, salt=worker)
                while True:  # until this logical batch is acknowledged
                    if conn is None or port != led.port:
                        if conn is not None:
                            conn.close()
                        port = led.port
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                    try:
                        conn.request(
                            "POST",
                            f"/{INGEST}",
                            body=body,
                            headers={"x-api-token": KEY, "content-type": "application/json"},
                        )
                        resp = conn.getresponse()
                        resp.read()
                    except (OSError, http.client.HTTPException):
                        # No answer: the batch may or may not have been applied.  Retry it
                        # under a new tag, as Segment would resend it.
                        with led.lock:
                            led.in_doubt[tag] = n
                        conn.close()
                        conn = None
                        tag = f"{self.prefix}{next(self._ids)}"
                        body = batch(tag, n, salt=worker)
                        time.sleep(0.05)
                        continue
                    if resp.status == 200:
                        with led.lock:
                            led.acked[tag] = n
                        break
                    # A definite refusal (503 while starting...) applied nothing: same tag.
                    assert resp.status == 503, (resp.status, tag)
                    with led.lock:
                        led.refused += 1
                    time.sleep(0.05)
        except BaseException as exc:  # pragma: no cover - reported by join()
            led.errors.append(exc)
        finally:
            if conn is not None:
                conn.close()


def check_exact(counts: dict[str, int], led: Ledger) -> int:
    """Assert the per-attempt invariant; return how many in-doubt attempts were applied."""
    unknown = set(counts) - set(led.acked) - set(led.in_doubt)
    assert not unknown, f"counted tags nobody sent: {sorted(unknown)[:5]}"
    wrong = {t: (counts.get(t, 0), n) for t, n in led.acked.items() if counts.get(t, 0) != n}
    assert not wrong, f"acknowledged batches not counted exactly once: {list(wrong.items())[:5]}"
    bad = {t: counts[t] for t, n in led.in_doubt.items() if counts.get(t, 0) not in (0, n)}
    assert not bad, f"in-doubt batches partially applied: {bad}"
    applied = [t for t in led.in_doubt if counts.get(t, 0)]
    assert sum(counts.values()) == sum(led.acked.values()) + sum(led.in_doubt[t] for t in applied)
    return len(applied)


def test_sigkill_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGKILL at random moments (4 rounds, 6 posting threads): acked counted exactly once."""
    write_config(
        tmp_path,
        durability={
            "fsync": "always",
            "segment_bytes": 512 * 1024,  # rotation and truncation happen under load
            "snapshot_interval_s": 0.25,  # crashes also hit snapshot writes
        },
    )
    rng = random.Random(5)
    led = Ledger()
    loader = Loader(led)
    srv = ServerProcess(tmp_path)
    led.port = srv.port
    loader.start()
    for _ in range(ROUNDS):
        led.wait_for_acks(rng.randint(4, 20))
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere within a batch's round trip
        srv.kill()
        srv = ServerProcess(tmp_path)  # same data dir, new port
        led.port = srv.port
    led.wait_for_acks(5)  # the last server takes load too
    loader.join()
    with srv:
        counts = counts_by_tag(srv.port)
        applied = check_exact(counts, led)
        assert srv.stop() == 0
    assert led.in_doubt, "no batch was in flight at a SIGKILL"
    # Restart once more: the final snapshot reproduces exactly the same answer.
    with ServerProcess(tmp_path) as again:
        assert counts_by_tag(again.port) == counts
        assert again.stop() == 0
    print(
        f"acked {len(led.acked)} batches ({sum(led.acked.values())} events), "
        f"in doubt {len(led.in_doubt)} (applied {applied}), refused {led.refused}"
    )


def test_sigterm_under_load_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM mid-load: exit 0, in-flight requests answered, a restart replays nothing."""
    write_config(tmp_path, durability={"snapshot_interval_s": 3600})
    led = Ledger()
    loader = Loader(led, prefix="t")
    srv = ServerProcess(tmp_path)
    led.port = srv.port
    loader.start()
    led.wait_for_acks(11)
    assert srv.stop(signal.SIGTERM) == 0
    assert "eventtally stopped" in srv.stdout()
    led.stop.set()
    with ServerProcess(tmp_path) as again:
        led.port = again.port
        loader.join()
        counts = counts_by_tag(again.port)
        check_exact(counts, led)
        # The final snapshot covered every logged batch: nothing left to replay.
        assert "replayed 0 record(s)" in again.stderr()
        assert again.stop(signal.SIGINT) == 0
    assert len(led.acked) > 10


def test_torn_wal_tail_is_cut_logged_and_served(tmp_path: Path) -> None:
    """A torn last WAL record is cut at start and logged; the server serves everything before."""
    write_config(tmp_path, durability={"snapshot_interval_s": 3600})
    with ServerProcess(tmp_path) as srv:
        for i in range(5):
            assert post(srv.port, batch(f"k{i}", 100)).status == 200
        srv.kill()
    segment = sorted((tmp_path / "data" / "wal").glob("wal-*.log"))[-1]
    start, end = last_wal_record_bounds(segment)
    record = segment.read_bytes()[start:end]
    torn = record[: len(record) // 2]  # the next record, interrupted halfway
    with segment.open("r+b") as fh:  # written where it would be: over the end marker
        fh.seek(end)
        fh.write(torn)
    with ServerProcess(tmp_path) as srv:
        assert "torn tail cut" in srv.stderr()
        assert segment.stat().st_size == end
        assert counts_by_tag(srv.port) == {f"k{i}": 100 for i in range(5)}
        assert post(srv.port, batch("k5", 100)).status == 200
        assert srv.stop() == 0
    # Truncating the last segment in the middle of its last record: that record is gone
    # (as after a crash mid-write), everything before it stays, and the server still serves.
    with ServerProcess(tmp_path) as srv:
        assert post(srv.port, batch("k6", 100)).status == 200
        srv.kill()
    segment = sorted((tmp_path / "data" / "wal").glob("wal-*.log"))[-1]
    start, end = last_wal_record_bounds(segment)
    with segment.open("r+b") as fh:
        fh.truncate(start + (end - start) // 3)
    with ServerProcess(tmp_path) as srv:
        assert "torn tail cut" in srv.stderr()
        counts = counts_by_tag(srv.port)
        assert counts == {f"k{i}": 100 for i in range(6)}
        assert srv.stop() == 0


def test_corrupt_newest_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    """With the newest snapshot damaged, the previous one plus the WAL rebuild the same state."""
    write_config(tmp_path, durability={"snapshot_interval_s": 3600})
    for i in range(3):
        with ServerProcess(tmp_path) as srv:
            assert post(srv.port, batch(f"s{i}", 50 + i)).status == 200
            assert srv.stop() == 0  # a final snapshot per start
    snaps = sorted((tmp_path / "data" / "snapshots").glob("snap-acme-*.bin"))
    assert len(snaps) == 2  # snapshots_keep
    newest = snaps[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with ServerProcess(tmp_path) as srv:
        err = srv.stderr()
        assert "falling back to an older one" in err and newest.name in err
        assert counts_by_tag(srv.port) == {"s0": 50, "s1": 51, "s2": 52}
        assert srv.stop() == 0


def test_ingest_time_buckets_replay_identically(tmp_path: Path) -> None:
    """Events dated at ingest time land in the same buckets after a SIGKILL and WAL replay."""
    write_config(tmp_path, durability={"snapshot_interval_s": 3600}, filters=[PER_MINUTE])
    now = time.time()
    window = {
        "startTime": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now - 3600)),
        "endTime": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now + 7200)),
    }
    with ServerProcess(tmp_path) as srv:
        for i in range(20):
            assert post(srv.port, batch(f"n{i}", 40, salt=i), ingest=NOW_INGEST).status == 200
            time.sleep(0.01)
        before = [
            results(srv.port, "per-minute", agg, calculation=calc, **window)
            for agg, calc in ((1, "COUNT"), (2, "SUM"), (2, "MAX"))
        ]
        srv.kill()
    with ServerProcess(tmp_path) as srv:
        assert "replayed 20 record(s)" in srv.stderr()
        after = [
            results(srv.port, "per-minute", agg, calculation=calc, **window)
            for agg, calc in ((1, "COUNT"), (2, "SUM"), (2, "MAX"))
        ]
        assert after == before
        assert sum(r["value"] for r in before[0]) == 800
        assert srv.stop() == 0


def test_damage_in_the_middle_of_the_log_refuses_to_start(tmp_path: Path) -> None:
    """A bad record followed by good ones is corruption, not a torn tail: exit 1, nothing cut."""
    write_config(tmp_path, durability={"snapshot_interval_s": 3600})
    with ServerProcess(tmp_path) as srv:
        for i in range(3):
            assert post(srv.port, batch(f"m{i}", 20)).status == 200
        srv.kill()
    segment = sorted((tmp_path / "data" / "wal").glob("wal-*.log"))[-1]
    data = bytearray(segment.read_bytes())
    data[40 + 200] ^= 0x01  # inside the first record's payload
    segment.write_bytes(bytes(data))
    srv = ServerProcess(tmp_path, wait=False)
    assert srv.proc.wait(60) == 1
    err = srv.stderr()
    assert "recovery failed" in err and "record at offset 24 is damaged" in err
    assert segment.stat().st_size == len(data)
    write_config(tmp_path, durability={"snapshot_interval_s": 3600, "wal_repair": True})
    with ServerProcess(tmp_path) as srv:  # the operator's choice: cut there, lose what follows
        assert "discard" in srv.stderr()
        assert counts_by_tag(srv.port) == {}
        assert srv.stop() == 0
