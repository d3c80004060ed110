"""Retention in the server: TOML defaults, the admin compaction endpoint, ``eventtally compact``,
``/metrics``, the resolution header, the state-limit message, and compaction across restarts."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from eventtally.cli import main
from eventtally.server import ConfigFileError, load_config, start_server
from eventtally.server.runtime import StateLimitError
from eventtally.server.runtime.maintenance import lower_thread_priority
from tests.server_support import (
    FIXED_NOW,
    INGEST,
    SEGMENT_KEY,
    Client,
    fixture_bytes,
    write_config,
)

ADMIN = "retention-admin-token"
DAY = 86_400
#: Server-wide: minutes for an hour, then hours forever; acme keeps minutes for a day.
RETENTION_TOML = """
retention = [
  { intervalType = "MINUTE", intervalCount = 1, keepSeconds = 3600 },
  { intervalType = "HOUR", intervalCount = 1, keepSeconds = 0 },
]
compaction_interval = 0
admin_token = "retention-admin-token"

[server.org_retention]
acme = [
  { intervalType = "MINUTE", intervalCount = 1, keepSeconds = 86400 },
  { intervalType = "DAY", intervalCount = 1, keepSeconds = 0 },
]
"""


def _config(directory: Path, retention: str = RETENTION_TOML) -> Path:
    path = write_config(directory)
    text = path.read_text()
    # [server] comes first; the retention keys (and the [server.org_retention] table) follow.
    head, _, rest = text.partition("\n[[organizations]]")
    path.write_text(head + "\n" + retention + "\n[[organizations]]" + rest)
    return path


def _admin(c: Client, path: str, body: Any) -> Any:
    return c.request(
        "POST", f"/admin/v1{path}", body, headers={"Authorization": f"Bearer {ADMIN}"}, key=False
    )


COUNT_BY_TYPE = {
    "filterId": "by-type",
    "aggregationId": 1,
    "calculation": "COUNT",
    "startTime": "2024-05-01T00:00:00Z",
    "endTime": "2024-06-01T00:00:00Z",
}


def test_toml_defaults_and_per_org_overrides_are_parsed(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path))
    cfg = loaded.server
    assert cfg.retention_for("beta")[0]["keepSeconds"] == 3600
    assert cfg.retention_for("acme")[1]["intervalType"] == "DAY"
    assert cfg.compaction_interval == 0
    # The documented defaults when nothing is configured.
    fresh = load_config(write_config(tmp_path / "plain")).server
    assert [(t["intervalType"], t["keepSeconds"]) for t in fresh.retention] == [
        ("MINUTE", 7 * DAY),
        ("HOUR", 400 * DAY),
        ("DAY", 0),
    ]
    assert fresh.compaction_interval == 60
    assert fresh.compaction_nice == 0


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'retention = [{ intervalType = "MINUTE", keepSeconds = 600 },'
            ' { intervalType = "HOUR", keepSeconds = 60 }]',
            "server.retention[1].keepSeconds",
        ),
        (
            '[server.org_retention]\nacme = [{ intervalType = "MINUTE", keepSeconds = 0 },'
            ' { intervalType = "DAY", keepSeconds = 0 }]',
            "server.org_retention.acme[0].keepSeconds",
        ),
        ("compaction_interval = -1", "server.compaction_interval"),
        ("compaction_nice = 20", "server.compaction_nice"),
        ("compaction_nice = -1", "server.compaction_nice"),
        ('retention = "7d"', "server.retention"),
    ],
)
def test_bad_retention_settings_name_the_setting(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(_config(tmp_path, toml))


def test_admin_compaction_metrics_and_resolution_header(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path))
    srv, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: FIXED_NOW)
    try:
        c = Client(srv, key=SEGMENT_KEY)
        assert c.ingest(fixture_bytes("batch.json")).status == 200
        before = c.results(COUNT_BY_TYPE)
        assert json.loads(before.header("X-Eventtally-Resolutions") or "") == [
            {
                "intervalType": "MINUTE",
                "intervalCount": 1,
                "startTime": "2024-05-01T00:00:00Z",
                "endTime": "2024-06-01T00:00:00Z",
            }
        ]
        # Two days later acme's minutes (kept a day) are days.
        r = _admin(c, "/compact", {"organization": "acme", "now": FIXED_NOW + 2 * DAY})
        assert r.status == 200, r.body
        report = r.json()["organizations"]["acme"]
        assert report["filters"] == 2 and report["skipped"] == []
        after = c.results(COUNT_BY_TYPE)
        totals = lambda rows: {  # noqa: E731
            row["groupings"]["Type"]: row["value"] for row in rows
        }
        days = after.json()
        assert {row["dt"][:10] for row in days} == {"2024-05-14"}
        assert all(row["dt"].endswith("T00:00:00Z") for row in days)
        by_type: dict[str, float] = {}
        for row in before.json():
            t = row["groupings"]["Type"]
            by_type[t] = by_type.get(t, 0) + row["value"]
        assert totals(days) == by_type
        res = json.loads(after.header("X-Eventtally-Resolutions") or "")
        # Minutes from the (day-aligned) horizon on, days before it.
        assert [(x["intervalType"], x["startTime"], x["endTime"]) for x in res] == [
            ("MINUTE", "2024-05-15T00:00:00Z", "2024-06-01T00:00:00Z"),
            ("DAY", "2024-05-01T00:00:00Z", "2024-05-15T00:00:00Z"),
        ]
        metrics = c.request("GET", "/metrics", key=False).body.decode()
        assert 'eventtally_compactions_total{org="acme",result="ok"} 1' in metrics
        assert 'eventtally_state_tier_bytes{org="acme",tier="1xDAY"}' in metrics
        assert 'eventtally_last_compaction_timestamp_seconds{org="acme"}' in metrics
        assert 'eventtally_compaction_cells_total{org="acme",action="merged"}' in metrics
        # Unknown organization, wrong method.
        assert _admin(c, "/compact", {"organization": "nope"}).status == 404
        wrong = c.request(
            "GET", "/admin/v1/compact", headers={"Authorization": f"Bearer {ADMIN}"}, key=False
        )
        assert wrong.status == 405
        c.close()
    finally:
        srv.close()
        thread.join(5)  # type: ignore[attr-defined]
    # A restart (final snapshot) keeps the compacted state and its tiers.
    loaded = load_config(tmp_path / "eventtally.toml")
    srv, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: FIXED_NOW)
    try:
        c = Client(srv, key=SEGMENT_KEY)
        assert c.results(COUNT_BY_TYPE).json() == after.json()
        # A late batch older than the horizon lands in the day bucket, once.
        assert c.ingest(fixture_bytes("batch.json")).status == 200
        doubled = totals(c.results(COUNT_BY_TYPE).json())
        assert doubled == {t: 2 * n for t, n in by_type.items()}
        c.close()
    finally:
        srv.close()
        thread.join(5)  # type: ignore[attr-defined]


def test_cli_compact_on_the_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    loaded = load_config(path)
    srv, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: FIXED_NOW)
    c = Client(srv, key=SEGMENT_KEY)
    assert c.ingest(fixture_bytes("batch.json"), INGEST).status == 200
    c.close()
    srv.close()
    thread.join(5)  # type: ignore[attr-defined]
    code = main(["compact", "--config", str(path), "--now", "2024-05-20T00:00:00Z", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["organizations"]["acme"]["cells_merged"] > 0
    code = main(["compact", "--config", str(path), "--org", "acme"])
    assert code == 0
    assert "compacted acme: 0 cell(s) merged" in capsys.readouterr().out
    assert main(["compact", "--config", str(path), "--org", "nope"]) == 1


def test_compact_through_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eventtally compact --url`` compacts through the admin API of the server that holds the
    data directory, and a wrong admin token is refused with the server's message."""
    path = _config(tmp_path)
    loaded = load_config(path)
    srv, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: FIXED_NOW)
    try:
        c = Client(srv, key=SEGMENT_KEY)
        assert c.ingest(fixture_bytes("batch.json"), INGEST).status == 200
        c.close()
        url = ["--url", srv.url, "--now", "2024-05-20T00:00:00Z", "--json"]
        assert main(["compact", *url, "--admin-token", ADMIN]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["organizations"]["acme"]["cells_merged"] > 0
        assert main(["compact", *url, "--admin-token", "wrong"]) == 1
        assert "server answered 401" in capsys.readouterr().err
    finally:
        srv.close()
        thread.join(5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["compact"], "compact through it: eventtally compact --url"),
        (["backfill", "--filter", "all-events"], "run the backfill through it"),
        (["backfill", "--snapshot", "state.etsnap", "--org", "acme"], "merge it through"),
    ],
)
def test_offline_commands_refuse_a_directory_a_server_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    """compact, backfill and snapshot backfill open the data directory only when no server
    holds it; otherwise they exit 1 naming how to do it through that server."""
    path = _config(tmp_path)
    (tmp_path / "state.etsnap").write_bytes(b"")
    loaded = load_config(path)
    srv, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: FIXED_NOW)
    try:
        args = [a if a != "state.etsnap" else str(tmp_path / a) for a in argv]
        assert main([*args, "--config", str(path)]) == 1
        assert hint in capsys.readouterr().err
    finally:
        srv.close()
        thread.join(5)  # type: ignore[attr-defined]


def test_the_state_limit_message_names_the_retention_setting() -> None:
    text = str(StateLimitError("acme", 10, 5))
    assert "keepSeconds" in text and "retention" in text
    assert "server.retention" in text and "eventtally compact" in text


class _HeldCompaction:
    """Stands in for an organization's engine: ``compact`` signals that it started, then waits
    (bounded) to be released before compacting; everything else goes to the real engine."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.started = threading.Event()
        self.release = threading.Event()

    def compact(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        self.release.wait(20)
        return self._engine.compact(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def test_a_batch_is_not_held_up_by_a_compaction_and_a_waiting_snapshot(tmp_path: Path) -> None:
    """While a compaction runs and a snapshot waits for it, a batch is still applied: the
    compaction holds the save lock, not the gate, so the waiting snapshot does not close the gate
    (were the compaction under the shared gate, the snapshot's exclusive wait would stop every
    new batch until the whole compaction ended). Every wait is bounded, so it cannot hang."""
    path = _config(tmp_path)
    loaded = load_config(path)
    srv, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: FIXED_NOW)
    runtime = srv.app.runtime  # type: ignore[attr-defined]
    st = runtime.org("acme")
    real = st.engine
    held = _HeldCompaction(real)
    c = Client(srv, key=SEGMENT_KEY)
    workers: list[threading.Thread] = []
    try:
        assert c.ingest(fixture_bytes("batch.json"), INGEST).status == 200
        st.engine = held
        compacting = threading.Thread(
            target=runtime.compact_org, args=("acme",), kwargs={"now": FIXED_NOW + 30 * DAY}
        )
        workers.append(compacting)
        compacting.start()
        assert held.started.wait(10)
        saving = threading.Thread(target=runtime.save_org, args=(st,), kwargs={"force": True})
        workers.append(saving)
        saving.start()
        time.sleep(0.3)  # the snapshot is now waiting for the compaction
        assert saving.is_alive(), "a snapshot must wait for a running compaction"
        statuses: list[int] = []
        batch = threading.Thread(
            target=lambda: statuses.append(c.ingest(fixture_bytes("batch.json"), INGEST).status)
        )
        workers.append(batch)
        batch.start()
        batch.join(10)
        assert statuses == [200], "a batch waited for the compaction"
        assert compacting.is_alive() and saving.is_alive()
    finally:
        held.release.set()
        for worker in workers:
            worker.join(20)
        st.engine = real
        c.close()
        srv.close()
        thread.join(5)  # type: ignore[attr-defined]


def test_the_compaction_thread_runs_at_lower_priority() -> None:
    """``lower_thread_priority`` raises the calling thread's own nice value (Linux), not the
    process's: the background compaction thread gives way to the threads applying batches."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("threads have their own priority on Linux only")
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[tuple[bool, int]] = []

    def worker() -> None:
        done = lower_thread_priority(5)
        seen.append((done, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(True, min(19, main_nice + 5))]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice
    assert lower_thread_priority(0) is False
