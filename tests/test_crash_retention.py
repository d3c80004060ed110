"""SIGKILL during background compaction under load, then restart (real processes, loopback).

The filter keeps hours for an hour and days forever, and every batch is timestamped in May 2024,
so each batch is older than the horizon: the first background compaction moves the hour buckets
into days and every later batch (live or replayed from the log) is routed into its day bucket.
Compaction runs every 50 ms and snapshots every 250 ms, so the kills land in compaction runs,
routing and snapshot writes.  The invariant is the one of ``test_crash_recovery``: an attempt
answered 200 is counted exactly once, an in-doubt attempt once or not at all, now at the day
resolution.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ops_support import BY_BATCH, ServerProcess, counts_by_tag, results, write_config
from tests.test_crash_recovery import Ledger, Loader, check_exact

pytestmark = pytest.mark.slow

DAY = "2024-05-14T00:00:00Z"

TIERED: dict[str, Any] = {
    **BY_BATCH,
    "retention": [
        {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 3600},
        {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 0},
    ],
}


def test_sigkill_during_background_compaction_counts_acked_batches_once(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        server={"compaction_interval": 0.05},
        durability={
            "fsync": "always",
            "segment_bytes": 512 * 1024,
            "snapshot_interval_s": 0.25,
        },
        filters=[TIERED],
    )
    rng = random.Random(11)
    led = Ledger()
    loader = Loader(led, prefix="c")
    srv = ServerProcess(tmp_path)
    led.port = srv.port
    loader.start()
    for _ in range(4):
        led.wait_for_acks(rng.randint(4, 16))
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere within a batch's round trip
        srv.kill()
        srv = ServerProcess(tmp_path)
        led.port = srv.port
    led.wait_for_acks(5)  # the last server takes load too
    loader.join()
    with srv:
        # Everything ends at the coarse resolution, one day bucket per batch tag, once a
        # background compaction has run after the last batches (every 50 ms; bounded wait).
        deadline = time.monotonic() + 30
        while {r["dt"] for r in results(srv.port)} != {DAY}:
            assert time.monotonic() < deadline, "hour buckets left 30 s after the load"
            time.sleep(0.02)
        counts = counts_by_tag(srv.port)
        applied = check_exact(counts, led)
        assert srv.stop() == 0
    with ServerProcess(tmp_path) as again:
        assert counts_by_tag(again.port) == counts
        assert again.stop() == 0
    print(
        f"acked {len(led.acked)} batches, in doubt {len(led.in_doubt)} (applied {applied}), "
        f"refused {led.refused}"
    )
