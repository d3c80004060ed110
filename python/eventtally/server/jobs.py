"""The server's job runner: long operations (backfills) in the background, on bounded threads.

Guarantees:
- At most ``max_workers`` jobs run at once, each on a daemon thread of its own that ends with
  the job (no idle pool is kept).  A job submitted while they are all busy is ``"queued"`` and
  starts, in submission order, as soon as one finishes.
- A job's record is a plain dict (``id``, ``status`` ``queued``/``running``/``done``/
  ``failed``, ``progress``, then ``result`` or ``error`` and ``finishedAt``); :meth:`get` and
  :meth:`list` return copies taken under the lock, so a report never sees half an update.
- A job that raises one of ``expected`` is ``failed`` with the exception's text; anything else
  is ``failed`` with its ``repr`` and logged with its traceback.  A job never kills the server.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_MAX_WORKERS", "JobRunner", "Progress"]

log = logging.getLogger("eventtally.server")

#: Backfills read the whole log or archive and compete with ingest for the cores: two at once is
#: already more than the machines this server targets (a few cores) can give them.
DEFAULT_MAX_WORKERS = 2

#: What a job calls to publish its progress (shown by ``GET /admin/v1/backfill/{id}``).
Progress = Callable[[dict[str, Any]], None]
#: A job: gets its progress callback, returns its result document.
Work = Callable[[Progress], dict[str, Any]]


class JobRunner:
    """Runs jobs on at most ``max_workers`` threads and keeps their records."""

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._waiting: deque[tuple[dict[str, Any], Work, tuple[type[BaseException], ...]]] = deque()
        self._running = 0

    def submit(
        self,
        work: Work,
        fields: dict[str, Any],
        *,
        expected: tuple[type[BaseException], ...] = (),
    ) -> dict[str, Any]:
        """Record a job with ``fields`` and run ``work`` now or when a thread frees up; returns
        a copy of the job's record as it is right after submission."""
        job_id = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {
            "id": job_id,
            "status": "queued",
            **fields,
            "startedAt": time.time(),
            "progress": {},
        }
        with self._lock:
            self._jobs[job_id] = job
            if self._running < self.max_workers:
                self._start_locked(job, work, expected)
            else:
                self._waiting.append((job, work, expected))
            return dict(job)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A copy of job ``job_id``'s record, or ``None``."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else dict(job)

    def list(self) -> list[dict[str, Any]]:
        """Copies of every job's record, oldest first."""
        with self._lock:
            return [dict(j) for j in self._jobs.values()]

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def _start_locked(
        self, job: dict[str, Any], work: Work, expected: tuple[type[BaseException], ...]
    ) -> None:
        self._running += 1
        job["status"] = "running"
        thread = threading.Thread(
            target=self._run,
            args=(job, work, expected),
            name=f"eventtally-backfill-{job['id']}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError as exc:  # the OS refused a thread: the job fails, the server lives
            self._running -= 1
            job.update(status="failed", error=f"could not start: {exc}", finishedAt=time.time())

    def _run(
        self, job: dict[str, Any], work: Work, expected: tuple[type[BaseException], ...]
    ) -> None:
        def progress(p: dict[str, Any]) -> None:
            with self._lock:
                job["progress"] = p

        try:
            result = work(progress)
        except expected as exc:
            outcome: dict[str, Any] = {"status": "failed", "error": str(exc)}
        except Exception as exc:
            log.exception("backfill job %s failed", job["id"])
            outcome = {"status": "failed", "error": repr(exc)}
        else:
            outcome = {"status": "done", "result": result}
        with self._lock:
            job.update(outcome, finishedAt=time.time())
            self._running -= 1
            if self._waiting:
                self._start_locked(*self._waiting.popleft())
