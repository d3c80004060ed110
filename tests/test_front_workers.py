"""The front's worker pool (``server/workers.py``): outcomes, order, bound, cancel, shutdown.

Every wait is bounded (``asyncio.wait_for``, ``Event.wait`` with a timeout) and the module runs
under pytest-timeout, so a pool that lost a call fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from eventtally.server.workers import Workers

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


class _Custom(BaseException):
    """Not an ``Exception``: the pool must deliver it as it is."""


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_results_and_exceptions_reach_the_awaiter() -> None:
    pool = Workers(2)

    def boom() -> None:
        raise ValueError("bad batch")

    def custom() -> None:
        raise _Custom("not an Exception")

    def stop() -> None:
        raise StopIteration("would end the awaiting coroutine")

    async def main() -> None:
        assert await pool.run(lambda a, b: a + b, 2, 3) == 5
        assert await pool.run(threading.current_thread) is not threading.current_thread()
        with pytest.raises(ValueError, match="bad batch"):
            await pool.run(boom)
        with pytest.raises(_Custom):
            await pool.run(custom)
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await pool.run(stop)
        assert isinstance(info.value.__cause__, StopIteration)

    try:
        _run(main())
    finally:
        pool.shutdown()


def test_threads_are_named_and_bounded() -> None:
    pool = Workers(3, "t-pool")
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    names: set[str] = set()

    def work() -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            names.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            state["now"] -= 1

    async def main() -> None:
        await asyncio.gather(*(pool.run(work) for _ in range(24)))

    try:
        _run(main())
    finally:
        pool.shutdown()
    assert state["max"] == 3  # 24 calls of 20 ms on 3 threads overlap, never more than 3
    assert names <= {"t-pool_0", "t-pool_1", "t-pool_2"} and len(names) >= 2


def test_calls_start_in_queue_order() -> None:
    pool = Workers(1)
    order: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(pool.run(order.append, i) for i in range(50)))

    try:
        _run(main())
    finally:
        pool.shutdown()
    assert order == list(range(50))


def test_a_call_cancelled_before_it_starts_never_runs() -> None:
    pool = Workers(1)
    gate = threading.Event()
    ran: list[str] = []

    def first() -> str:
        assert gate.wait(WAIT)
        ran.append("first")
        return "first"

    async def main() -> None:
        a = pool.run(first)
        b = pool.run(ran.append, "second")
        c = pool.run(ran.append, "third")
        b.cancel()
        gate.set()
        assert await a == "first"
        await c
        assert b.cancelled()

    try:
        _run(main())
    finally:
        pool.shutdown()
    assert ran == ["first", "third"]


def test_shutdown_runs_what_is_queued_then_refuses() -> None:
    pool = Workers(1)
    gate = threading.Event()
    done: list[int] = []

    def slow(i: int) -> None:
        assert gate.wait(WAIT)
        done.append(i)

    async def main() -> None:
        for i in range(5):
            pool.run(slow, i)  # not awaited: shutdown must still run them
        await asyncio.sleep(0)

    _run(main())  # the loop is gone now; the results have nowhere to go and are dropped
    errors: list[BaseException] = []
    old = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment,return-value]
    try:
        gate.set()
        pool.shutdown()
    finally:
        threading.excepthook = old
    assert done == [0, 1, 2, 3, 4]
    assert errors == []  # a result for a closed loop is dropped, the thread does not die

    async def late() -> None:
        with pytest.raises(RuntimeError, match="shut down"):
            pool.run(done.append, 5)

    _run(late())
    pool.shutdown()  # idempotent


def test_shutdown_before_any_call_and_bad_size() -> None:
    pool = Workers(2)
    pool.shutdown()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="shut down"):
            pool.run(int)

    _run(main())
    with pytest.raises(ValueError, match="at least one thread"):
        Workers(0)


def test_a_call_goes_to_the_thread_that_went_idle_last() -> None:
    # Calls one after the other run on one thread (its malloc arena stays warm), not round-robin
    # over every thread as a shared queue's first-come waiters would take them.
    pool = Workers(4)
    seen: list[int] = []

    async def all_idle() -> None:
        # Every thread back on the idle stack (bounded: a pool that never gets there fails).
        deadline = time.monotonic() + 10
        while len(pool._idle) < pool.threads:
            assert time.monotonic() < deadline, "the worker threads never went idle"
            await asyncio.sleep(0.001)

    async def main() -> None:
        await pool.run(int)  # starts the threads
        for _ in range(20):
            await all_idle()
            seen.append(await pool.run(threading.get_ident))

    try:
        _run(main())
    finally:
        pool.shutdown()
    assert len(set(seen)) == 1, seen


def test_outcomes_that_finish_together_wake_the_loop_once() -> None:
    """Calls finishing while the loop is busy (the batches one fsync made durable) are delivered
    by one drain: one ``call_soon_threadsafe`` (a self-pipe write and a loop wake-up), not one
    per call; a call finishing after that drain wakes the loop again."""
    pool = Workers(3)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        release = threading.Event()
        futs = [pool.run(lambda i=i: (release.wait(WAIT), i)[1]) for i in range(3)]
        inbox = pool._inboxes[loop]
        release.set()
        # Keep the loop busy (not draining) until all three outcomes are posted.
        deadline = time.monotonic() + WAIT
        while len(inbox.outcomes) < 3:
            assert time.monotonic() < deadline, "the calls did not finish"
            time.sleep(0.005)
        assert await asyncio.gather(*futs) == [0, 1, 2]
        assert wakes == 1
        assert await pool.run(lambda: 7) == 7
        assert wakes == 2

    try:
        _run(main())
    finally:
        pool.shutdown()
