"""The server's one exception tree and status table (server/errors.py) and its bounded job
runner (server/jobs.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally.server import errors
from eventtally.server.jobs import JobRunner

WAIT = 10.0  # seconds any wait below may take at most: a broken runner fails, never hangs

SERVER_EXCEPTIONS = [
    errors.HTTPError,
    errors.ConfigFileError,
    errors.ProvisioningError,
    errors.MetadataError,
    errors.NotFound,
    errors.Conflict,
    errors.DataDirBusyError,
    errors.NotReadyError,
    errors.DefinitionsPendingError,
    errors.BatchNotLoggedError,
    errors.StateLimitError,
    errors.BackfillError,
    errors.RepeatedBackfillError,
    errors.HealthQueryError,
]


@pytest.mark.parametrize("cls", SERVER_EXCEPTIONS, ids=lambda c: c.__name__)
def test_every_server_exception_has_the_one_root(cls: type[Exception]) -> None:
    """Every exception the server defines derives from ServerError."""
    assert issubclass(cls, errors.ServerError)


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (errors.ConfigFileError, ValueError),
        (errors.ProvisioningError, ValueError),
        (errors.MetadataError, ValueError),
        (errors.BackfillError, ValueError),
        (errors.HealthQueryError, ValueError),
        (errors.DataDirBusyError, OSError),
        (errors.BatchNotLoggedError, OSError),
    ],
    ids=lambda c: c.__name__,
)
def test_server_exceptions_keep_their_standard_base(cls: type[Exception], base: type) -> None:
    """Code catching ValueError or OSError still catches what it caught before."""
    assert issubclass(cls, base)


def test_definitions_pending_is_not_an_os_error() -> None:
    """Nothing failed at the OS level when definitions wait for a snapshot."""
    assert not issubclass(errors.DefinitionsPendingError, OSError)


def test_the_old_import_places_name_the_same_classes() -> None:
    """The documented names are the classes of errors.py, not copies."""
    from eventtally.server import (
        BackfillError,
        ConfigFileError,
        DataDirBusyError,
        HTTPError,
        MetadataError,
        NotReadyError,
        ProvisioningError,
        StateLimitError,
        health,
        metadata,
        runtime,
    )

    assert BackfillError is errors.BackfillError is runtime.BackfillError
    assert ConfigFileError is errors.ConfigFileError
    assert DataDirBusyError is errors.DataDirBusyError
    assert HTTPError is errors.HTTPError
    assert MetadataError is errors.MetadataError is metadata.MetadataError
    assert metadata.NotFound is errors.NotFound and metadata.Conflict is errors.Conflict
    assert NotReadyError is errors.NotReadyError
    assert ProvisioningError is errors.ProvisioningError
    assert StateLimitError is errors.StateLimitError
    assert health.QueryError is errors.HealthQueryError


@pytest.mark.parametrize(
    ("exc", "status", "retry_after", "message"),
    [
        (
            errors.NotReadyError("recovering"),
            503,
            "1",
            "Server not ready (recovering); retry later",
        ),
        (
            errors.BatchNotLoggedError("[Errno 28] No space left on device: '/data/wal'"),
            503,
            "5",
            "Could not persist the batch; retry later",
        ),
        (
            errors.DefinitionsPendingError("definitions not persisted"),
            503,
            "5",
            "Could not persist the batch; retry later",
        ),
        (errors.StateLimitError("acme", 10, 5), 429, "60", None),
        (errors.RepeatedBackfillError("merged before"), 409, None, "merged before"),
        (errors.BackfillError("no such filter"), 400, None, "no such filter"),
        (errors.NotFound("organization 'x' not found"), 404, None, None),
        (errors.Conflict("exists"), 409, None, "exists"),
        (errors.MetadataError("bad id"), 400, None, "bad id"),
        (errors.HealthQueryError("limit: out of range"), 400, None, None),
        (eventtally.NotFoundError("unknown filter"), 404, None, None),
        (eventtally.JsonError("malformed JSON at byte 3"), 400, None, None),
        (eventtally.QueryError("bad query"), 400, None, "bad query"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_the_status_table(
    exc: Exception, status: int, retry_after: str | None, message: str | None
) -> None:
    """Each exception is answered with its status, Retry-After and message."""
    err = errors.http_error(exc)
    assert err is not None
    assert err.status == status
    assert dict(err.headers).get("Retry-After") == retry_after
    assert err.message == (str(exc) if message is None else message)


def test_a_not_logged_batch_never_shows_the_os_error_text() -> None:
    """The OS error's text names server paths: the answer carries a fixed message."""
    err = errors.http_error(errors.BatchNotLoggedError("/srv/secret/wal/wal-1.log: EIO"))
    assert err is not None and "/srv/secret" not in err.message


def test_http_errors_pass_through_and_unknown_exceptions_are_500s() -> None:
    """An HTTPError is its own answer; anything the table does not know gives None (500)."""
    given = errors.HTTPError(418, "teapot", [("X", "y")])
    assert errors.http_error(given) is given
    assert errors.http_error(RuntimeError("bug")) is None
    assert errors.http_error(TypeError("bug")) is None
    assert errors.http_error(OSError("disk")) is None


def test_data_dir_busy_names_the_holder(tmp_path: Path) -> None:
    """DataDirBusyError names the directory and the pid holding it."""
    exc = errors.DataDirBusyError(tmp_path / "LOCK", "1234")
    assert str(tmp_path) in str(exc) and "process 1234" in str(exc) and exc.pid == "1234"


# ------------------------------------------------------------------ job runner


def _wait_for(predicate: Any) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_jobs_beyond_the_bound_are_queued_then_run_in_order() -> None:
    """With one worker, a second job waits ('queued') until the first ends, then runs."""
    runner = JobRunner(max_workers=1)
    release = threading.Event()
    order: list[str] = []

    def blocking(progress: Any) -> dict[str, Any]:
        progress({"step": 1})
        assert release.wait(WAIT)
        order.append("first")
        return {"n": 1}

    def quick(progress: Any) -> dict[str, Any]:
        order.append("second")
        return {"n": 2}

    first = runner.submit(blocking, {"kind": "a"})
    second = runner.submit(quick, {"kind": "b"})
    assert first["status"] == "running" and first["kind"] == "a"
    assert second["status"] == "queued"
    _wait_for(lambda: runner.get(first["id"])["progress"] == {"step": 1})  # type: ignore[index]
    assert runner.running == 1
    assert runner.get(second["id"])["status"] == "queued"  # type: ignore[index]
    release.set()
    _wait_for(lambda: all(j["status"] == "done" for j in runner.list()))
    assert order == ["first", "second"]
    assert runner.get(second["id"])["result"] == {"n": 2}  # type: ignore[index]
    assert runner.running == 0


def test_failed_jobs_report_their_error_and_free_their_thread() -> None:
    """An expected exception reports its text, another its repr; both free the slot."""
    runner = JobRunner(max_workers=1)

    def refused(progress: Any) -> dict[str, Any]:
        raise errors.BackfillError("filter 'f' is not enabled")

    def buggy(progress: Any) -> dict[str, Any]:
        raise KeyError("oops")

    a = runner.submit(refused, {}, expected=(errors.BackfillError,))
    b = runner.submit(buggy, {}, expected=(errors.BackfillError,))
    _wait_for(lambda: all(j["status"] == "failed" for j in runner.list()))
    assert runner.get(a["id"])["error"] == "filter 'f' is not enabled"  # type: ignore[index]
    assert runner.get(b["id"])["error"] == "KeyError('oops')"  # type: ignore[index]
    assert runner.running == 0
    assert runner.get("nope") is None


def test_records_are_copies() -> None:
    """Changing a returned record does not change the job."""
    runner = JobRunner(max_workers=1)
    job = runner.submit(lambda progress: {}, {"kind": "x"})
    _wait_for(lambda: runner.get(job["id"])["status"] == "done")  # type: ignore[index]
    got = runner.get(job["id"])
    assert got is not None
    got["status"] = "tampered"
    runner.list()[0]["kind"] = "tampered"
    assert runner.get(job["id"]) == {**got, "status": "done"}


def test_max_workers_must_be_positive() -> None:
    """A runner that could never run a job is refused."""
    with pytest.raises(ValueError, match="max_workers"):
        JobRunner(max_workers=0)
