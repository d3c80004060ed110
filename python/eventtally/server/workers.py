"""The front's worker pool: runs the application off the event loop, answers into the loop.

What this module guarantees:

- :meth:`Workers.run` queues ``fn(*args)`` and returns an ``asyncio`` future of the loop that
  called it (:meth:`Workers.run_on`: of the loop given, which must be the caller's); the future
  gets the result, or the exception (any ``BaseException``), exactly once.
  Calls start in the order they were queued, on at most ``threads`` threads.
- A call whose future was cancelled before a thread took it does not run.  One that already
  runs is not interrupted (a worker cannot be); its result is dropped.
- :meth:`Workers.shutdown` lets every queued call run, then stops and joins the threads; a call
  queued after it raises :class:`RuntimeError`.  A result that arrives after its loop closed is
  dropped (the loop's owner is gone, so nobody awaits it).
- Outcomes reach their loop through one inbox per loop: a worker appends to it and wakes the loop
  (``call_soon_threadsafe``, one write to its self-pipe) only when no wake-up is pending already,
  so outcomes that finish together (the batches one WAL fsync made durable) cost the loop one
  wake-up, not one each.  Every outcome appended is delivered by the loop's next drain.

Why not ``loop.run_in_executor`` with a ``ThreadPoolExecutor``: each call there makes a
``concurrent.futures.Future`` (a ``Condition`` over an ``RLock``), a work item, an idle-semaphore
check on submit and a chain of callbacks copying one future's state into another, and it wakes
the loop through that chain.  Here a call is one tuple handed to an idle thread's
``queue.SimpleQueue`` (or to a backlog, under one short lock) and one ``call_soon_threadsafe``
back.  Under load with the interpreter lock contended, the executor's lock operations were
about a fifth of the loop's time holding it (py-spy ``--gil``).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Workers"]

T = TypeVar("T")

_Item = tuple["_Inbox", "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _deliver(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: settle ``fut`` unless its awaiter gave up on it."""
    if fut.cancelled():
        return
    if error is None:
        fut.set_result(result)
    else:
        fut.set_exception(error)


_Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


class _Inbox:
    """Outcomes on their way to one loop, and whether a drain is scheduled on it already."""

    __slots__ = ("_lock", "loop", "outcomes", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self.outcomes: list[_Outcome] = []
        self.scheduled = False

    def post(self, outcome: _Outcome) -> None:
        """On a worker: queue ``outcome``; wake the loop unless a drain is pending (it will see
        this outcome: the drain takes the list and clears the flag under the same lock)."""
        with self._lock:
            self.outcomes.append(outcome)
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # the loop closed: nobody awaits these outcomes
            with self._lock:
                self.outcomes.clear()
                self.scheduled = False

    def drain(self) -> None:
        """On the loop: settle every outcome queued so far."""
        with self._lock:
            outcomes, self.outcomes = self.outcomes, []
            self.scheduled = False
        for fut, result, error in outcomes:
            _deliver(fut, result, error)


def _call(
    inbox: _Inbox, fut: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    """On a worker: run one call and hand its outcome to the loop's inbox."""
    if fut.cancelled():  # read across threads, but cancellation is final: at worst it runs
        return
    result: Any = None
    error: BaseException | None = None
    try:
        result = fn(*args)
    except StopIteration as exc:  # a future refuses it (it would end the awaiting coroutine)
        error = RuntimeError(f"a worker call raised StopIteration: {exc!r}")
        error.__cause__ = exc
    except BaseException as exc:  # delivered to the awaiter, as an executor would
        error = exc
    inbox.post((fut, result, error))
    del result, error  # not kept while this thread waits for its next call


class Workers:
    """``threads`` daemon threads named ``{name}_{i}``, started on first use.

    A call goes to the thread that went idle last (a stack), as ``ThreadPoolExecutor`` reuses
    its idle threads, not to whichever thread waited longest: each thread allocates from its
    own malloc arena, so handing calls round-robin to every thread kept every arena cold. A
    100 MB Metrics API answer then paid fresh page faults each time (1.4-1.6x the answer's time
    over HTTP, and up to ``threads`` arenas of it held).
    """

    def __init__(self, threads: int, name: str = "eventtally-worker") -> None:
        if threads < 1:
            raise ValueError(f"a worker pool needs at least one thread, not {threads}")
        self.threads = threads
        self.name = name
        # Guards the backlog, the idle stack and starting/stopping; held for a few list
        # operations only, never while a call runs.
        self._lock = threading.Lock()
        self._backlog: collections.deque[_Item | None] = collections.deque()
        # Idle threads' own hand-off queues, the most recently idle last. Invariant: a thread
        # is idle only while the backlog is empty.
        self._idle: list[queue.SimpleQueue[_Item | None]] = []
        self._started: list[threading.Thread] = []
        self._stopped = False
        # One inbox per loop that has called `run` (usually one); closed loops' are dropped
        # when another loop first calls.
        self._inboxes: dict[asyncio.AbstractEventLoop, _Inbox] = {}

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the future (of the running loop) settles with its outcome."""
        return self.run_on(asyncio.get_running_loop(), fn, *args)

    def run_on(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """:meth:`run` for a caller on ``loop`` that knows it: on Python 3.11 every
        ``asyncio.get_running_loop()`` is a ``getpid`` system call, and the front queues a call
        or two per request."""
        if self._stopped:
            raise RuntimeError("cannot run a call after the worker pool shut down")
        if not self._started:
            self._start()
        inbox = self._inboxes.get(loop)
        if inbox is None:
            with self._lock:
                for closed in [lp for lp in self._inboxes if lp.is_closed()]:
                    del self._inboxes[closed]
                inbox = self._inboxes.setdefault(loop, _Inbox(loop))
        fut: asyncio.Future[T] = loop.create_future()
        self._dispatch((inbox, fut, fn, args))
        return fut

    def _dispatch(self, item: _Item | None) -> None:
        with self._lock:
            if self._idle:
                self._idle.pop().put(item)
            else:
                self._backlog.append(item)

    def _start(self) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError("cannot run a call after the worker pool shut down")
            if self._started:
                return
            # All at once: an idle thread blocked on its hand-off queue costs no CPU.
            for i in range(self.threads):
                t = threading.Thread(target=self._work, name=f"{self.name}_{i}", daemon=True)
                t.start()
                self._started.append(t)

    def _work(self) -> None:
        mine: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        while True:
            with self._lock:
                if self._backlog:
                    item = self._backlog.popleft()
                    waiting = False
                else:
                    self._idle.append(mine)
                    waiting = True
            if waiting:
                item = mine.get()
            if item is None:
                return
            _call(*item)
            # `item` (the request's environ and body) is not kept while this thread waits.
            del item

    def shutdown(self) -> None:
        """Run what is queued, then stop and join every thread (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            threads = list(self._started)
        # One stop per thread, behind every queued call (the backlog is first in, first out,
        # and a thread takes no more work after its stop).
        for _ in threads:
            self._dispatch(None)
        for t in threads:
            t.join()
