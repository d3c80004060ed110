"""Concurrency: many threads posting at once lose nothing; reads run while writes do."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

from tests.server_support import (
    Client,
    expected_by_type,
    fixture_bytes,
    query,
    running_server,
    segment_headers,
    simple_points,
)

THREADS = 16
BATCHES_PER_THREAD = 12


def test_sixteen_threads_posting_at_once_lose_nothing(tmp_path: Path) -> None:
    """16 threads x 12 batches of 300 events, each on its own keep-alive connection: all counted."""
    base = json.loads(fixture_bytes("batch.json"))
    events = []
    for i in range(300):
        ev = copy.deepcopy(base[i % len(base)])
        ev["messageId"] = f"m-{i}"
        events.append(ev)
    body = json.dumps(events, separators=(",", ":")).encode()
    headers = segment_headers(body)
    del headers["Connection"]  # keep-alive, to stress one connection per thread
    barrier = threading.Barrier(THREADS)
    failures: list[object] = []

    with running_server(tmp_path) as srv:

        def worker() -> None:
            c = Client(srv, key=None)
            try:
                barrier.wait(10)
                for _ in range(BATCHES_PER_THREAD):
                    reply = c.ingest(body, headers=headers)
                    if reply.status != 200:
                        failures.append((reply.status, reply.body))
            except Exception as exc:  # pragma: no cover - reported below
                failures.append(exc)
            finally:
                c.close()

        reader_stop = threading.Event()
        read_statuses: list[int] = []

        def reader() -> None:
            c = Client(srv)
            while not reader_stop.is_set():
                read_statuses.append(c.results(query()).status)
            c.close()

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        r = threading.Thread(target=reader)
        r.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        reader_stop.set()
        r.join(10)
        assert failures == []
        assert read_statuses and set(read_statuses) == {200}

        total = THREADS * BATCHES_PER_THREAD
        c = Client(srv)
        rows = c.results(query("all-events")).json()
        assert sum(r["value"] for r in rows) == total * 300
        expected = {k: v * total for k, v in expected_by_type(events).items()}
        assert simple_points(c.results(query()).json()) == expected
        c.close()
