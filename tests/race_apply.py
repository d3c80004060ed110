"""A stand-alone race on one engine, run in a subprocess by ``test_threads`` (and by hand, for
repeat counts: ``python tests/race_apply.py --rounds 50``).

Each round prepares one batch and starts, behind one barrier, 4 threads that all ``apply`` it and
3 that ingest, query and call ``to_bytes`` on the same engine. Exactly one ``apply`` must win; the
others must be refused with ``ConfigError`` naming ``prepared``. The totals are checked at the
end. A deadlock cannot stall the caller: ``faulthandler`` dumps every thread's stack and exits
the process from its own C watchdog thread, which needs no GIL.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import threading

import eventtally

APPLIERS = 4
PER_BATCH = 200
INGEST = {"id": "race", "schema": "ARRAY_OF_EVENTS", "timestamp": {"source": "INGEST"}}
FILTER = {
    "id": "f",
    "name": "race",
    "filter": "@.v >= 0",
    "groupingItems": [{"grouping": "@.g", "alias": "g"}],
    "intervalType": "HOUR",
    "intervalCount": 1,
    "aggregations": [
        {"id": 1, "name": "n", "calculations": ["COUNT", "SUM", "PERCENTILES"],
         "calculationField": "@.v"}
    ],
}
QUERY = {
    "filterId": "f",
    "aggregationId": 1,
    "calculation": "COUNT",
    "startTime": "2024-05-14T00:00:00Z",
    "endTime": "2024-05-15T00:00:00Z",
}


def batch(round_no: int) -> bytes:
    return json.dumps([{"g": i % 4, "v": round_no * PER_BATCH + i} for i in range(PER_BATCH)]).encode()


def total(engine: eventtally.Engine) -> float:
    return sum(row["value"] for row in engine.results(QUERY))


def run(rounds: int) -> None:
    engine = eventtally.Engine(INGEST, [FILTER], clock=lambda: 1715688000.0)
    side_ingests = 0
    for round_no in range(rounds):
        prepared = engine.prepare(batch(round_no))
        barrier = threading.Barrier(APPLIERS + 3)
        wins: list[int] = []
        refusals: list[str] = []
        failures: list[BaseException] = []
        side_done = [0]

        def applier(i: int) -> None:
            barrier.wait()
            try:
                engine.apply(prepared)
                wins.append(i)
            except eventtally.ConfigError as exc:
                refusals.append(exc.field)
            except BaseException as exc:
                failures.append(exc)

        def ingester() -> None:
            barrier.wait()
            try:
                engine.ingest(batch(10_000 + round_no))
                side_done[0] += 1
            except BaseException as exc:
                failures.append(exc)

        def reader() -> None:
            barrier.wait()
            try:
                total(engine)
            except BaseException as exc:
                failures.append(exc)

        def snapshotter() -> None:
            barrier.wait()
            try:
                eventtally.Engine.from_bytes(engine.to_bytes())
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=applier, args=(i,)) for i in range(APPLIERS)]
        threads += [threading.Thread(target=f) for f in (ingester, reader, snapshotter)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        if len(wins) != 1 or refusals != ["prepared"] * (APPLIERS - 1):
            raise AssertionError(f"round {round_no}: wins {wins}, refusals {refusals}")
        side_ingests += side_done[0]
    expected = (rounds + side_ingests) * PER_BATCH
    if total(engine) != expected:
        raise AssertionError(f"counted {total(engine)}, expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds before a stack dump")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    run(args.rounds)
    faulthandler.cancel_dump_traceback_later()
    print(f"ok: {args.rounds} rounds")


if __name__ == "__main__":
    sys.exit(main())
