"""Helpers for the real-process suites ``test_crash_*`` and ``test_ops_*`` (imported explicitly).

They run ``python -m eventtally serve --config ... --port-file ...`` as a subprocess on
127.0.0.1 port 0, send real signals, and talk HTTP with ``http.client``.  Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.server_support import Reply

KEY = "ops-test-key-0123456789"
ADMIN = "ops-admin-token"
ORG = "acme"
INGEST = "in"  # timestamps from @.receivedAt
NOW_INGEST = "now"  # timestamps at ingest time
RECEIVED_AT = "2024-05-14T11:30:00.000Z"
START = "2024-05-01T00:00:00Z"
END = "2024-06-01T00:00:00Z"

BY_BATCH: dict[str, Any] = {
    "id": "by-batch",
    "name": "Count per batch tag",
    "groupingItems": [{"grouping": "@.event", "alias": "batch"}],
    "intervalType": "HOUR",
    "intervalCount": 1,
    "aggregations": [{"id": 1, "name": "Count", "calculations": ["COUNT"]}],
}
PER_MINUTE: dict[str, Any] = {
    "id": "per-minute",
    "name": "Per minute by type",
    "groupingItems": [{"grouping": "@.type", "alias": "type"}],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {"id": 1, "name": "Count", "calculations": ["COUNT"]},
        {
            "id": 2,
            "name": "Revenue",
            "calculations": ["SUM", "MAX"],
            "calculationField": "@.properties.revenue",
        },
    ],
}


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def write_config(
    directory: Path,
    *,
    server: dict[str, Any] | None = None,
    durability: dict[str, Any] | None = None,
    filters: list[dict[str, Any]] | None = None,
) -> Path:
    """``eventtally.toml`` with one organization, two ingests and the given filters."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": "data",
        "rate_limit": 0,
        "access_log": False,
        "admin_token": ADMIN,
    }
    settings.update(server or {})
    dur: dict[str, Any] = {"fsync": "always"}
    dur.update(durability or {})
    lines = ["[server]", *(f"{k} = {_toml_value(v)}" for k, v in settings.items())]
    lines += ["", "[durability]", *(f"{k} = {_toml_value(v)}" for k, v in dur.items())]
    lines.append(
        textwrap.dedent(
            f"""
            [[organizations]]
            id = "{ORG}"
            name = "Acme"

            [[organizations.api_keys]]
            name = "rw"
            key = "{KEY}"
            permissions = ["READ", "WRITE"]

            [[organizations.ingests]]
            id = "{INGEST}"
            schema = "ARRAY_OF_EVENTS"
            timestamp = {{ source = "PROPERTY", path = "@.receivedAt", format = "ISO_8601" }}

            [[organizations.ingests]]
            id = "{NOW_INGEST}"
            schema = "ARRAY_OF_EVENTS"
            """
        )
    )
    for f in filters if filters is not None else [BY_BATCH]:
        lines.append("[[organizations.filters]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in f.items()]
        lines.append("")
    path = directory / "eventtally.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def batch(tag: str, n: int, *, received_at: str = RECEIVED_AT, salt: int = 0) -> bytes:
    """``n`` Segment-like track events whose ``event`` is ``tag`` (the per-batch grouping)."""
    events = [
        {
            "type": "track" if (i + salt) % 5 else "page",
            "event": tag,
            "messageId": f"{tag}-{i}",
            "userId": f"u{(i * 7 + salt) % 50}",
            "receivedAt": received_at,
            "properties": {"revenue": (i * 13 + salt) % 97 / 4},
        }
        for i in range(n)
    ]
    return json.dumps(events, separators=(",", ":")).encode()


class ServerProcess:
    """``python -m eventtally serve`` in ``directory`` (its config), stderr kept in a file."""

    def __init__(self, directory: Path, *extra: str, wait: bool = True) -> None:
        self.directory = directory
        self.port_file = directory / "port"
        self.port_file.unlink(missing_ok=True)
        n = len(list(directory.glob("serve-*.stderr")))
        self.stderr_path = directory / f"serve-{n}.stderr"
        self.stdout_path = directory / f"serve-{n}.stdout"
        self._err = self.stderr_path.open("w")
        self._out = self.stdout_path.open("w")
        argv = [sys.executable, "-m", "eventtally", "serve"]
        argv += ["--config", str(directory / "eventtally.toml"), "--port-file", str(self.port_file)]
        self.proc = subprocess.Popen(
            [*argv, *extra],
            cwd=directory,
            stdout=self._out,
            stderr=self._err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.port = 0
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> int:
        """Wait for the port file (written once recovery is done); return the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                text = self.port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    return self.port
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"server not ready in {timeout} s: {self.stderr()}")

    def wait_listening(self, timeout: float = 30.0) -> int:
        """Wait for the ``listening on`` line (printed before recovery); return the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout_path.read_text().splitlines():
                if line.startswith("eventtally listening on http://"):
                    self.port = int(line.split()[3].rstrip(";").rsplit(":", 1)[1])
                    return self.port
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"server not listening in {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text()

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._close_files()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close_files()

    def _close_files(self) -> None:
        for fh in (self._err, self._out):
            if not fh.closed:
                fh.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._close_files()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post(port: int, body: bytes, ingest: str = INGEST, key: str = KEY) -> Reply:
    return request(
        port,
        "POST",
        f"/{ingest}",
        body,
        {"x-api-token": key, "content-type": "application/json"},
    )


def results(port: int, filter_id: str = "by-batch", aggregation_id: int = 1, **q: Any) -> Any:
    query = {
        "filterId": filter_id,
        "aggregationId": aggregation_id,
        "calculation": "COUNT",
        "startTime": START,
        "endTime": END,
        **q,
    }
    r = request(
        port,
        "POST",
        "/api/v1/metrics/results",
        json.dumps(query).encode(),
        {"x-api-token": KEY, "content-type": "application/json"},
    )
    assert r.status == 200, (r.status, r.body)
    return r.json()


def counts_by_tag(port: int) -> dict[str, int]:
    """COUNT per ``event`` tag over the whole window (through the HTTP API)."""
    out: dict[str, int] = {}
    for row in results(port):
        tag = (row.get("groupings") or {}).get("batch", "")
        out[tag] = out.get(tag, 0) + int(row["value"])
    return out


def total_count(port: int) -> int:
    return sum(counts_by_tag(port).values())


# --------------------------------------------------------------------------------------------
# Backfill suites (test_ops_backfill, test_ops_snapshot_backfill): the ingest as an engine
# definition, the queries they compare, batches spread over minutes, and the compared answers.
# --------------------------------------------------------------------------------------------

INGEST_DEF = {
    "id": INGEST,
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": {"source": "PROPERTY", "path": "@.receivedAt", "format": "ISO_8601"},
}
BACKFILL_QUERIES = [
    ("per-minute", 1, "COUNT"),
    ("per-minute", 2, "SUM"),
    ("per-minute", 2, "MAX"),
    ("by-batch", 1, "COUNT"),
]


def minute_batches(prefix: str, n: int, minute0: int, *, hour: int, first_size: int) -> list[bytes]:
    """``n`` batches tagged ``prefix0..``, of ``first_size``, ``first_size + 1``, ... events,
    one a minute from ``hour:minute0`` on 2024-05-14."""
    return [
        batch(
            f"{prefix}{i}",
            first_size + i,
            received_at=f"2024-05-14T{hour:02d}:{(minute0 + i) % 60:02d}:{(7 * i) % 60:02d}.000Z",
            salt=i,
        )
        for i in range(n)
    ]


def backfill_answers(port: int) -> list[Any]:
    """The server's answers to ``BACKFILL_QUERIES``, each as a sorted list of JSON rows."""
    return [
        sorted(json.dumps(r, sort_keys=True) for r in results(port, f, a, calculation=c))
        for f, a, c in BACKFILL_QUERIES
    ]
