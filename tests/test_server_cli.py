"""The ``eventtally`` command: ``serve`` as a real subprocess (demo, SIGTERM) and management."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally.cli import build_parser, main
from tests.server_support import ALL_FILTER, INGEST, SEGMENT_KEY, fixture_bytes, write_config


class ServeProcess:
    """``python -m eventtally serve ...`` with its stdout collected line by line."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.stderr_path = cwd / "serve.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventtally", "serve", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{pattern!r} not printed; stdout={self.lines} "
                        f"stderr={self.stderr_path.read_text()[-2000:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            self._stderr.close()


@contextmanager
def serve(args: list[str], cwd: Path) -> Iterator[tuple[ServeProcess, str]]:
    p = ServeProcess(args, cwd)
    try:
        url = p.wait_for(r"eventtally serving on (http://\S+)").group(1)
        yield p, url
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def _run_curl_line(line: str) -> tuple[int, bytes]:
    """Run a printed curl line as is with curl, or (without curl) by interpreting its argv."""
    argv = shlex.split(line)
    assert argv[0] == "curl"
    if shutil.which("curl"):
        out = subprocess.run([*argv, "-w", "\n%{http_code}"], capture_output=True, check=True)
        body, _, code = out.stdout.rpartition(b"\n")
        return int(code), body
    headers: dict[str, str] = {}
    data: bytes | None = None
    url = method = ""
    it = iter(argv[1:])
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(it).encode()
        elif not arg.startswith("-"):
            url = arg
    req = urllib.request.Request(url, data=data, headers=headers, method=method or "GET")
    with urllib.request.urlopen(req) as resp:
        return resp.status, resp.read()


def _post(url: str, path: str, body: bytes, key: str) -> int:
    req = urllib.request.Request(url + path, data=body, method="POST", headers={"x-api-token": key})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _count(url: str, key: str, filter_id: str) -> float:
    q = {
        "filterId": filter_id,
        "aggregationId": 1,
        "calculation": "COUNT",
        "startTime": "2000-01-01T00:00:00Z",
        "endTime": "2100-01-01T00:00:00Z",
    }
    req = urllib.request.Request(
        url + "/api/v1/metrics/results",
        data=json.dumps(q).encode(),
        method="POST",
        headers={"x-api-token": key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return sum(r["value"] for r in json.loads(resp.read()))


def test_serve_demo_prints_curl_lines_that_work(tmp_path: Path) -> None:
    """``python -m eventtally serve --demo``: both printed curl lines work as printed."""
    with serve(["--demo", "--port", "0", "--data-dir", str(tmp_path / "d")], tmp_path) as (p, _):
        p.wait_for(r"/api/v1/metrics/results")
        curl_lines = [line for line in p.lines if line.startswith("curl ")]
        assert len(curl_lines) == 2
        status, body = _run_curl_line(curl_lines[0])
        assert (status, body) == (200, b"")
        status, body = _run_curl_line(curl_lines[1])
        assert status == 200
        rows = json.loads(body)
        assert [r["value"] for r in rows] == [1]
        assert rows[0]["groupings"]["event"] == "Signed Up"
        assert p.stop() == 0
    assert "eventtally stopped" in p.lines


def test_serve_config_sigterm_saves_and_restart_keeps_data(tmp_path: Path) -> None:
    """SIGTERM stops gracefully (exit 0, state saved); a restart serves the same aggregates."""
    write_config(tmp_path, {"save_interval": 0})
    args = ["--config", str(tmp_path / "eventtally.toml")]
    batch = fixture_bytes("request-body-batch.json")
    with serve(args, tmp_path) as (p, url):
        assert _post(url, f"/{INGEST}", batch, SEGMENT_KEY) == 200
        assert _post(url, f"/{INGEST}", batch, "bad") == 401
        assert p.stop(signal.SIGTERM) == 0
    log = p.stderr_path.read_text()
    assert f'"POST /{INGEST}" 200' in log and f'"POST /{INGEST}" 401' in log
    assert (tmp_path / "data" / "state" / "acme.snapshot").is_file()
    with serve(args, tmp_path) as (p, url):
        assert _count(url, SEGMENT_KEY, "all-events") == 7
        assert p.stop(signal.SIGINT) == 0


def test_serve_without_orgs_prints_a_hint(tmp_path: Path) -> None:
    """Plain ``serve`` on an empty data dir creates nothing and says how to start."""
    with serve(["--port", "0", "--data-dir", str(tmp_path / "d")], tmp_path) as (p, _):
        p.wait_for("No organizations yet")
        assert p.stop() == 0


def test_serve_reports_a_bad_config(tmp_path: Path) -> None:
    """A broken config exits 1 with a message naming the problem."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nprot = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "eventtally", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "prot" in out.stderr


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_manages_orgs_ingests_filters_and_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """create/list/disable for every object, against the data dir's SQLite."""
    d = ["--data-dir", str(tmp_path / "data")]
    assert _cli(capsys, "org", "create", "acme", "--name", "Acme", *d)[0] == 0
    code, _, err = _cli(capsys, "org", "create", "acme", *d)
    assert code == 1 and "already exists" in err
    code, out, _ = _cli(capsys, "org", "list", "--json", *d)
    assert [o["id"] for o in json.loads(out)] == ["acme"]

    code, out, _ = _cli(
        capsys,
        "ingest",
        "create",
        "--org",
        "acme",
        "--id",
        "abc123",
        "--timestamp-path",
        "@.receivedAt",
        *d,
    )
    assert code == 0 and "/abc123" in out
    (tmp_path / "f.json").write_text(json.dumps(ALL_FILTER))
    assert (
        _cli(capsys, "filter", "create", "--org", "acme", "--file", str(tmp_path / "f.json"), *d)[0]
        == 0
    )
    code, _, err = _cli(capsys, "filter", "create", "--org", "acme", "--json", '{"id": "x"}', *d)
    assert code == 1 and "invalid filter" in err

    code, out, _ = _cli(
        capsys, "key", "create", "--org", "acme", "--name", "seg", "--permissions", "WRITE", *d
    )
    assert code == 0
    raw = out.strip().splitlines()[-1]
    assert len(raw) == 72
    code, out, _ = _cli(capsys, "key", "list", "--org", "acme", *d)
    assert "seg" in out and raw not in out
    key_id = raw.split("-")[0]

    from eventtally.server import MetadataStore

    store = MetadataStore(tmp_path / "data")
    try:
        record = store.authenticate(raw)
        assert record is not None and record.permissions == frozenset({"WRITE"})
    finally:
        store.close()

    assert _cli(capsys, "key", "disable", key_id, *d)[0] == 0
    assert _cli(capsys, "filter", "disable", "--org", "acme", "all-events", *d)[0] == 0
    assert _cli(capsys, "ingest", "disable", "abc123", *d)[0] == 0
    assert _cli(capsys, "org", "disable", "acme", *d)[0] == 0
    code, out, _ = _cli(capsys, "key", "list", "--json", *d)
    assert [k["enabled"] for k in json.loads(out)] == [False]
    code, out, _ = _cli(capsys, "filter", "list", "--json", *d)
    assert [f["enabled"] for f in json.loads(out)] == [False]


def test_cli_changes_reach_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key created with the CLI works against a server already running on that data dir."""
    write_config(tmp_path)
    with serve(["--config", str(tmp_path / "eventtally.toml")], tmp_path) as (p, url):
        code, out, _ = _cli(
            capsys,
            "key",
            "create",
            "--org",
            "acme",
            "--name",
            "late",
            "--config",
            str(tmp_path / "eventtally.toml"),
        )
        assert code == 0
        raw = out.strip().splitlines()[-1]
        assert _post(url, f"/{INGEST}", b"[{}]", raw) == 200
        assert p.stop() == 0


# ---------------------------------------------------------------- new-user rough edges


def _walk(parser: argparse.ArgumentParser, path: str = "eventtally") -> Iterator[tuple[str, Any]]:
    """Every (command path, parser) of the CLI, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def test_every_subcommand_and_option_has_help_text() -> None:
    """`--help` at every level describes each subcommand and each option."""
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {a.dest for a in action._choices_actions if a.help}
                assert described == set(action.choices), f"{path}: {set(action.choices)}"
            elif action.dest != "help":
                assert action.help, f"{path} {action.option_strings or action.dest}"
        if path != "eventtally":
            assert parser.description, path


@pytest.mark.parametrize("group", ["key", "org", "ingest", "filter"])
def test_group_help_lists_actions_with_descriptions(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eventtally key --help` (and org, ingest, filter) describes create/list/disable/enable."""
    with pytest.raises(SystemExit) as info:
        main([group, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for action in ("create", "list", "disable", "enable"):
        assert re.search(rf"^\s+{action}\s+\S", out, re.M), (action, out)


def test_version_flag_and_module_attribute(capsys: pytest.CaptureFixture[str]) -> None:
    """`eventtally --version` prints the installed version, also `eventtally.__version__`."""
    assert eventtally.__version__ == importlib.metadata.version("eventtally")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"eventtally {eventtally.__version__}\n"


def test_key_create_and_list_give_permissions_one_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`key create --json` and `key list --json` both give permissions as a list."""
    d = ["--data-dir", str(tmp_path / "data")]
    assert _cli(capsys, "org", "create", "acme", *d)[0] == 0
    code, out, _ = _cli(
        capsys,
        "key",
        "create",
        "--org",
        "acme",
        "--name",
        "r",
        "--permissions",
        "READ",
        "--json",
        *d,
    )
    created = json.loads(out)
    assert code == 0 and created["permissions"] == ["READ"]
    code, out, _ = _cli(capsys, "key", "list", "--json", *d)
    (listed,) = json.loads(out)
    assert listed["permissions"] == ["READ"]
    assert {k: v for k, v in created.items() if k != "key"} == listed
    code, out, _ = _cli(capsys, "key", "list", *d)
    assert "READ" in out and "['READ']" not in out  # the table joins the list


def test_port_clash_names_the_port_and_creates_nothing(tmp_path: Path) -> None:
    """A taken port is reported with its address before any data directory is created."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "eventtally", "serve", "--port", str(port), "--demo",
             "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "--port" in done.stderr
    assert not (tmp_path / "data").exists()


def test_backfill_of_an_unknown_filter_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backfill --filter nope` names the unknown filter instead of "enabled in none"."""
    d = ["--data-dir", str(tmp_path / "data")]
    assert _cli(capsys, "org", "create", "acme", *d)[0] == 0
    code, _, err = _cli(capsys, "backfill", "--filter", "nope", *d)
    assert code == 1
    assert "unknown filter 'nope'" in err and "none" not in err


def test_key_disabled_by_the_cli_is_refused_when_the_command_returns(tmp_path: Path) -> None:
    """`eventtally key disable` in another process: the very next request is refused."""
    from eventtally.server import MetadataStore
    from tests.server_support import WRITE_KEY, Client, running_server

    with running_server(tmp_path) as srv:
        c = Client(srv, key=WRITE_KEY)
        assert c.ingest(b"[{}]").status == 200
        store = MetadataStore(tmp_path / "data")
        try:
            key_id = next(k.id for k in store.list_keys("acme") if k.name == "writer")
        finally:
            store.close()
        done = subprocess.run(
            [sys.executable, "-m", "eventtally", "key", "disable", key_id,
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert c.ingest(b"[{}]").message == "Disabled API Key"
        c.close()
