"""The ``eventtally`` command: ``serve``, ``backfill``, ``compact`` and
``org|ingest|filter|key create|list|enable|disable``.

Guarantees:
- ``eventtally serve`` binds 127.0.0.1:8080 unless told otherwise, applies the config's
  provisioning, answers ``/healthz`` at once and everything else (``/readyz`` included) with 503
  until recovery has finished, then prints ``eventtally serving on URL`` (and writes
  ``--port-file``).  SIGTERM or SIGINT stop it gracefully (stop accepting, finish in-flight
  requests, fsync the log, snapshot every changed organization, exit 0).
- ``eventtally backfill`` applies a filter to batches it never saw, from the write-ahead log or
  from archive files: on the data directory when no server runs, or through a running server's
  admin API (``--url``).  It prints progress on stderr and never counts a batch twice.
  ``eventtally backfill --snapshot FILE --org ORG`` merges an engine snapshot aggregated offline
  into the organization's live state, durably, once (a repeat is refused by content hash).
- ``eventtally compact`` runs retention compaction now, the same way (data directory, or
  ``--url``); the compacted state is snapshotted before it exits.
- ``--demo`` creates the quick-start organization, ingest and filter and prints a fresh
  Read+Write key with two ``curl`` lines that work as printed.  Without ``--demo`` nothing is
  created implicitly.
- The config file is ``--config``, else ``./eventtally.toml`` when it exists.  The data directory
  is ``--data-dir``, else the config's ``server.data_dir``, else ``./eventtally-data``.
- Management commands work on the data directory's SQLite directly, also while a server runs:
  it checks the metadata for changes on every authentication, so a key or organization
  disabled by a command that has returned is refused on the next request.  Raw keys are
  printed once and never stored.
- Exit status: 0 success, 1 a refused operation (message on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server is imported lazily, by the commands that need it
    from .server import LoadedConfig, Manager, Runtime, ServerConfig
    from .server.metadata import ApiKeyRecord, FilterRecord, IngestRecord, Organization

    #: What ``enable``/``disable`` print: any metadata record.
    Record = Organization | IngestRecord | FilterRecord | ApiKeyRecord

__all__ = ["main"]

DEFAULT_CONFIG = "eventtally.toml"


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config:
        return Path(args.config)
    default = Path(DEFAULT_CONFIG)
    return default if default.is_file() else None


def _load(args: argparse.Namespace) -> tuple[ServerConfig, LoadedConfig | None]:
    """(ServerConfig, LoadedConfig | None) from --config and --data-dir."""
    from .server import ServerConfig, load_config

    path = _config_path(args)
    loaded = load_config(path) if path is not None else None
    cfg = loaded.server if loaded is not None else ServerConfig()
    if getattr(args, "data_dir", None):
        cfg = cfg.with_overrides(data_dir=Path(args.data_dir))
    return cfg, loaded


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return str(value)

    table = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _read_definition(args: argparse.Namespace) -> dict[str, Any] | None:
    if getattr(args, "file", None):
        text = Path(args.file).read_text(encoding="utf-8")
    elif getattr(args, "json", None):
        text = args.json
    else:
        return None
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("the definition must be a JSON object")
    return dict(doc)


# ------------------------------------------------------------------------- serve


def _demo_lines(base: str, raw_key: str, ingest_id: str, filter_id: str) -> list[str]:
    now = datetime.now(UTC)
    received = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    start = (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    end = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    event = {
        "type": "track",
        "event": "Signed Up",
        "userId": "user-1",
        "messageId": "demo-1",
        "receivedAt": received,
    }
    query = {
        "filterId": filter_id,
        "aggregationId": 1,
        "calculation": "COUNT",
        "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endTime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    compact = {"separators": (",", ":")}
    return [
        f"curl -sS -X POST '{base}/{ingest_id}' -H 'x-api-token: {raw_key}' "
        f"-H 'content-type: application/json' -d '{json.dumps([event], **compact)}'",  # type: ignore[arg-type]
        f"curl -sS -X POST '{base}/api/v1/metrics/results' -H 'x-api-token: {raw_key}' "
        f"-H 'content-type: application/json' -d '{json.dumps(query, **compact)}'",  # type: ignore[arg-type]
    ]


def _write_port_file(path: str, port: int) -> None:
    from .durability.files import atomic_write

    # Not private: a supervisor running as another user may read it (the umask decides).
    atomic_write(path, f"{port}\n".encode(), private=False)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import DataDirBusyError, ensure_demo, make_server, serve_in_thread

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger = logging.getLogger("eventtally.server")
    # Handlers first: a SIGTERM during startup must still end in a graceful stop.
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cfg, loaded = _load(args)
    cfg = cfg.with_overrides(host=args.host, port=args.port)
    if args.admin_token:
        cfg = cfg.with_overrides(admin_token=args.admin_token)
    if args.tls_cert or args.tls_key:
        cfg = cfg.with_overrides(
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
        )
    server = make_server(cfg, provisioning=loaded, recover=False)
    app = server.app
    host = str(server.server_address[0])
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    scheme = server.url.split(":", 1)[0]
    base = (
        f"{scheme}://[{shown}]:{server.port}"
        if ":" in shown
        else f"{scheme}://{shown}:{server.port}"
    )
    thread = serve_in_thread(server)
    print(
        f"eventtally listening on {server.url}; recovering state (GET /readyz answers 503 "
        "until done)",
        flush=True,
    )
    try:
        app.runtime.open(stop=stop)
    except DataDirBusyError as exc:
        server.close()
        if stop.is_set():
            print("eventtally stopped", flush=True)
            return 0
        print(f"eventtally: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        logger.critical("recovery failed: %s", exc, exc_info=True)
        server.close()
        print(f"eventtally: error: recovery failed: {exc}", file=sys.stderr)
        return 1
    print(f"eventtally serving on {server.url} (data: {Path(cfg.data_dir).resolve()})", flush=True)
    print(f"Dashboard: {base}/ui/ (sign in with a key that has Read)", flush=True)
    if args.demo:
        demo = ensure_demo(app.manager)
        app.runtime.sync()
        print(
            f"\nDemo organization {demo.org_id!r}: ingest {demo.ingest_id!r} (Array of JSON "
            f"Objects, timestamp @.receivedAt), filter {demo.filter_id!r}.\n"
            f"Read+Write API key (shown once; a new one is issued at every --demo start):\n"
            f"  {demo.raw_key}\n\nSend an event, then read the count:\n",
            flush=True,
        )
        for line in _demo_lines(base, demo.raw_key, demo.ingest_id, demo.filter_id):
            print(line + "\n", flush=True)
    elif not app.store.view.orgs:
        print(
            "No organizations yet: start with --demo, provision them in eventtally.toml, "
            "or use `eventtally org create`.",
            flush=True,
        )
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    while not stop.wait(0.5):
        if not thread.is_alive():
            break
    logger.info("shutting down")
    server.close()
    print("eventtally stopped", flush=True)
    return 0


# ------------------------------------------------------------------------- backfill


class _Progress:
    """Progress lines on stderr: rewritten in place on a terminal, every 2 s otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: dict[str, Any], final: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 2.0):
            return
        self.last = now
        total = max(1, int(p.get("bytesTotal") or 1))
        done = min(total, int(p.get("bytesDone") or 0))
        line = (
            f"backfill {p.get('filter')}: {100 * done / total:5.1f}% "
            f"({done / 1e6:,.1f} of {total / 1e6:,.1f} MB), {p.get('records', 0):,} "
            f"{'file(s)' if p.get('kind') == 'file' else 'batch(es)'}, "
            f"{p.get('events', 0):,} event(s)"
        )
        if self.tty:
            print("\r" + line, end="\n" if final else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def _print_backfill(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    what = (
        f"{len(result.get('files') or [])} file(s)"
        if result.get("kind") == "file"
        else f"{result.get('records', 0):,} logged batch(es)"
    )
    print(
        f"backfilled filter {result['filter']} of {result['organization']} from {what}: "
        f"{result.get('events', 0):,} event(s), {result.get('accepted', 0):,} accepted, "
        f"{result.get('failed', 0)} failed, in {result.get('seconds', 0)} s"
    )
    oldest = result.get("oldestRetainedMs")
    if result.get("kind") == "wal" and oldest is not None:
        when = datetime.fromtimestamp(oldest / 1000, UTC).isoformat(timespec="seconds")
        print(f"(the oldest batch still in the log was received at {when})")


AdminCall = Callable[..., Any]


def _admin_api(args: argparse.Namespace, *, timeout: float) -> AdminCall:
    """``call(method, path, data=None)`` for the admin API at ``args.url`` with the admin token
    (``--admin-token``, ``EVENTTALLY_ADMIN_TOKEN`` or the config's), found once; an HTTP error
    becomes ``ValueError`` carrying the server's message."""
    from .server import load_config

    token = args.admin_token or os.environ.get("EVENTTALLY_ADMIN_TOKEN")
    if not token:
        path = _config_path(args)
        token = load_config(path).server.admin_token if path is not None else None
    if not token:
        raise ValueError("--url needs the server's admin token (--admin-token)")
    url = args.url.rstrip("/")

    def call(method: str, path: str, data: Any = None) -> Any:
        req = urllib.request.Request(
            url + path,
            data=None if data is None else json.dumps(data).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message", str(exc))
            except ValueError:
                message = str(exc)
            raise ValueError(f"server answered {exc.code}: {message}") from None

    return call


def _backfill_remote(args: argparse.Namespace, progress: _Progress) -> int:
    call = _admin_api(args, timeout=30)
    body: dict[str, Any] = {"organization": args.org, "filter": args.filter}
    if args.file:
        body.update(files=[str(Path(f).resolve()) for f in args.file], force=args.force)
        if args.ingest:
            body["ingest"] = args.ingest
    else:
        body.update({"from": args.start, "to": args.end})

    job = call("POST", "/admin/v1/backfill", body)
    while job.get("status") in ("queued", "running"):  # queued: the job runner is busy
        time.sleep(0.2)
        job = call("GET", f"/admin/v1/backfill/{job['id']}")
        if job.get("progress"):
            progress(job["progress"])
    if job.get("status") != "done":
        raise ValueError(f"backfill failed: {job.get('error')}")
    progress({**job["result"], "bytesDone": 1, "bytesTotal": 1}, final=True)
    _print_backfill(job["result"], args.json)
    return 0


def _backfill_snapshot_remote(args: argparse.Namespace) -> int:
    """``--snapshot`` through a running server: ``POST /admin/v1/backfill`` answers once the
    merge is durable (the server reads the file, so it must see the path)."""
    call = _admin_api(args, timeout=600)
    body = {"organization": args.org, "snapshot": str(Path(args.snapshot).resolve())}
    result = call("POST", "/admin/v1/backfill", body)
    _print_snapshot_backfill(result, args.json)
    return 0


def _print_snapshot_backfill(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"merged snapshot {', '.join(result.get('files') or [])} into "
        f"{result['organization']} (filters {result['filter']}) in {result.get('seconds', 0)} s"
    )


@contextlib.contextmanager
def _offline_runtime(
    args: argparse.Namespace, busy_hint: str, *, with_retention: bool = False
) -> Iterator[Runtime]:
    """The data directory's ``Runtime``, opened for a one-off command while no server runs, then
    closed (which snapshots what the command changed). A server holding the directory makes
    this a ``ValueError`` that ends with ``busy_hint`` (how to do it through that server).
    ``with_retention``: the config's retention defaults apply (``compact``)."""
    from dataclasses import replace

    from .server import DataDirBusyError, MetadataStore, Runtime

    cfg, _loaded = _load(args)
    options: dict[str, Any] = {"retention": cfg.retention_for} if with_retention else {}
    store = MetadataStore(cfg.data_dir)
    runtime = Runtime(
        store,
        durability=replace(cfg.durability, lock_timeout_s=0.0),
        snapshot_interval=0.0,
        max_state_bytes=0,
        **options,
    )
    try:
        try:
            runtime.open()
        except DataDirBusyError as exc:
            raise ValueError(f"{exc}; {busy_hint}") from None
        yield runtime
    finally:
        runtime.close()
        store.close()


def _cmd_backfill_snapshot(args: argparse.Namespace) -> int:
    """``eventtally backfill --snapshot FILE --org ORG``: merge an engine snapshot aggregated
    offline into the organization's live state (on the data directory, or through --url)."""
    from .server import BackfillError

    if args.filter or args.file or args.start or args.end:
        raise ValueError("--snapshot carries its own filters; drop --filter/--file/--from/--to")
    if not args.org:
        raise ValueError("--snapshot needs --org")
    if args.url:
        return _backfill_snapshot_remote(args)
    data = Path(args.snapshot).read_bytes()
    busy = (
        "merge it through the server: eventtally backfill --snapshot FILE "
        "--org ORG --url http://HOST:PORT --admin-token TOKEN"
    )
    with _offline_runtime(args, busy) as runtime:
        try:
            result = runtime.backfill_snapshot(args.org, data, source=str(args.snapshot))
        except BackfillError as exc:
            raise ValueError(str(exc)) from None
        _print_snapshot_backfill(result.to_dict(), args.json)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from .server import BackfillError
    from .server.runtime import parse_time_ms

    if args.snapshot:
        return _cmd_backfill_snapshot(args)
    if not args.filter:
        raise ValueError("backfill needs --filter (or --snapshot FILE)")
    if args.file and (args.start or args.end):
        raise ValueError("--from/--to select logged batches; they do not apply to --file")
    progress = _Progress(args.quiet)
    if args.url:
        return _backfill_remote(args, progress)
    start_ms = parse_time_ms(args.start, "--from")
    end_ms = parse_time_ms(args.end, "--to")
    busy = (
        "run the backfill through it: eventtally backfill --url "
        "http://HOST:PORT --admin-token TOKEN ... (POST /admin/v1/backfill)"
    )
    with _offline_runtime(args, busy) as runtime:
        org = args.org or _only_org_with(runtime, args.filter)
        try:
            if args.file:
                result = runtime.backfill_files(
                    org, args.filter, args.file, ingest_id=args.ingest, force=args.force,
                    progress=progress,
                )  # fmt: skip
            else:
                result = runtime.backfill_wal(org, args.filter, start_ms, end_ms, progress=progress)
        except BackfillError as exc:
            raise ValueError(str(exc)) from None
        progress({**result.to_dict(), "bytesDone": 1, "bytesTotal": 1}, final=True)
        _print_backfill(result.to_dict(), args.json)
    return 0


def _print_compaction(reports: dict[str, dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"organizations": reports}, indent=2))
        return
    for org_id, r in sorted(reports.items()):
        print(
            f"compacted {org_id}: {r['cells_merged']:,} cell(s) merged into coarser tiers, "
            f"{r['cells_dropped']:,} dropped past the last tier, "
            f"{r['groups_released']:,} grouping tuple(s) released, "
            f"{r['bytes_freed']:,} bytes freed"
        )
        for skipped in r.get("skipped", []):
            print(f"  skipped filter {skipped['filter_id']}: {skipped['reason']}")


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact now: retention tiers merge old buckets, data past the last tier goes."""
    from .server.runtime import parse_time_ms

    now_ms = parse_time_ms(args.now, "--now")
    if args.url:
        body: dict[str, Any] = {}
        if args.org:
            body["organization"] = args.org
        if now_ms is not None:
            body["now"] = now_ms / 1000
        result = _admin_api(args, timeout=600)("POST", "/admin/v1/compact", body)
        _print_compaction(result["organizations"], args.json)
        return 0
    busy = (
        "compact through it: eventtally compact --url http://HOST:PORT "
        "--admin-token TOKEN (POST /admin/v1/compact)"
    )
    # Closing the runtime snapshots every compacted organization, so the work is kept.
    with _offline_runtime(args, busy, with_retention=True) as runtime:
        now = None if now_ms is None else now_ms / 1000
        if args.org:
            if args.org not in runtime.org_ids():
                raise ValueError(f"organization {args.org!r} not found")
            reports = {args.org: runtime.compact_org(args.org, now=now)}
        else:
            reports = runtime.compact_all(now=now)
        _print_compaction(reports, args.json)
    return 0


def _only_org_with(runtime: Runtime, filter_id: str) -> str:
    orgs = [o for o in runtime.org_ids() if filter_id in runtime.org(o).filters]
    if not orgs:
        raise ValueError(
            f"unknown filter {filter_id!r}: no organization has an enabled filter with that id "
            "(`eventtally filter list` shows them)"
        )
    if len(orgs) > 1:
        raise ValueError(
            f"filter {filter_id!r} exists in several organizations ({', '.join(orgs)}); "
            "name one with --org"
        )
    return str(orgs[0])


# ------------------------------------------------------------------------- management


def _manager(args: argparse.Namespace) -> Manager:
    from .server import Manager, MetadataStore

    cfg, _ = _load(args)
    return Manager(MetadataStore(cfg.data_dir), max_filters_per_org=cfg.max_filters_per_org)


def _manage(
    args: argparse.Namespace,
    *,
    create: Callable[[Manager], None],
    rows: Callable[[Manager], list[dict[str, Any]]],
    columns: list[str],
    set_enabled: Callable[[Manager, bool], Record],
    label: str,
) -> int:
    """The shared shape of ``org|ingest|filter|key create|list|enable|disable``.

    ``create(manager)`` does and reports the creation, ``rows(manager)`` lists the objects for
    ``columns``, ``set_enabled(manager, enabled)`` returns the enabled or disabled record.
    """
    m = _manager(args)
    if args.action == "create":
        create(m)
    elif args.action == "list":
        _print_rows(rows(m), columns, args.json)
    else:
        rec = set_enabled(m, args.action == "enable")
        print(f"{label} {rec.id} {'enabled' if rec.enabled else 'disabled'}")
    return 0


def cmd_org(args: argparse.Namespace) -> int:
    def create(m: Manager) -> None:
        org = m.create_org(args.id, args.name, rate_limit=args.rate_limit)
        print(f"created organization {org.id}")

    return _manage(
        args,
        create=create,
        rows=lambda m: [o.to_dict() for o in m.list_orgs()],
        columns=["id", "name", "enabled", "rateLimit", "source", "createdAt"],
        set_enabled=lambda m, enabled: m.set_org_enabled(args.id, enabled),
        label="organization",
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    def create(m: Manager) -> None:
        defn = _read_definition(args) or {}
        for key, value in (
            ("id", args.id),
            ("name", args.name),
            ("schema", args.schema),
            ("arrayPath", args.array_path),
        ):
            if value is not None:
                defn[key] = value
        if args.timestamp_path:
            defn["timestamp"] = {
                "source": "PROPERTY",
                "path": args.timestamp_path,
                "format": args.timestamp_format or "ISO_8601",
            }
        ingest = m.create_ingest(args.org, defn)
        print(f"created ingest {ingest.id} ({ingest.schema}) in organization {ingest.org_id}")
        print(f"POST URL path: /{ingest.id}")

    return _manage(
        args,
        create=create,
        rows=lambda m: [i.to_dict() for i in m.list_ingests(args.org)],
        columns=["id", "organizationId", "name", "schema", "enabled", "source"],
        set_enabled=lambda m, enabled: m.set_ingest_enabled(args.id, enabled),
        label="ingest",
    )


def cmd_filter(args: argparse.Namespace) -> int:
    def create(m: Manager) -> None:
        defn = _read_definition(args)
        if defn is None:
            raise ValueError("give the filter definition with --file PATH or --json TEXT")
        if args.id:
            defn["id"] = args.id
        rec = m.create_filter(args.org, defn)
        print(f"created filter {rec.id} in organization {rec.org_id}")

    return _manage(
        args,
        create=create,
        rows=lambda m: [f.to_dict() for f in m.list_filters(args.org)],
        columns=["id", "organizationId", "name", "enabled", "source"],
        set_enabled=lambda m, enabled: m.set_filter_enabled(args.org, args.id, enabled),
        label="filter",
    )


def cmd_key(args: argparse.Namespace) -> int:
    def create(m: Manager) -> None:
        record, raw = m.create_key(
            args.org, args.name, args.permissions, org_wide=not args.personal
        )
        if args.json:
            print(json.dumps({**record.to_dict(), "key": raw}, indent=2))
        else:
            perms = "+".join(sorted(record.permissions))
            print(f"created API key {record.id} ({perms}) in organization {record.org_id}")
            print("The key is shown only now; store it safely:")
            print(raw)

    return _manage(
        args,
        create=create,
        # The same record shape as `key create --json` (permissions a list); only the table
        # joins the list into one cell.
        rows=lambda m: [k.to_dict() for k in m.list_keys(args.org)],
        columns=["id", "organizationId", "name", "permissions", "orgWide", "enabled", "source"],
        set_enabled=lambda m, enabled: m.set_key_enabled(args.id, enabled),
        label="API key",
    )


# ------------------------------------------------------------------------- parser


class _PrintVersion(argparse.Action):
    """``--version``: prints ``eventtally VERSION`` and exits, as argparse's ``version`` action
    does, but reads the version only when the option is given (``importlib.metadata``, which
    reads it, costs more to import than the rest of a command's start)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from . import __version__

        sys.stdout.write(f"eventtally {__version__}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config (default: ./eventtally.toml if present)")
    common.add_argument(
        "--data-dir", help="data directory (default: the config's, else ./eventtally-data)"
    )
    parser = argparse.ArgumentParser(
        prog="eventtally",
        description="Self-hosted, Aggregations.io-compatible event aggregation server.",
        epilog="Run `eventtally COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action=_PrintVersion, help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP server",
        description="Run the ingest endpoint, the Metrics API, the admin API and the dashboard.",
    )
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="create the quick-start demo and print a key and curl lines",
    )
    serve.add_argument(
        "--admin-token",
        help="enable /admin/v1 with this bearer token (or set EVENTTALLY_ADMIN_TOKEN)",
    )
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log verbosity on stderr (default INFO)",
    )
    serve.add_argument(
        "--port-file", help="write the bound port to this file once ready (useful with --port 0)"
    )
    serve.set_defaults(func=cmd_serve)

    bf = sub.add_parser(
        "backfill",
        parents=[common],
        help="apply a filter to batches it never saw (from the WAL or archive files)",
        description="Apply a filter added later to the raw batches still in the write-ahead "
        "log (received in [--from, --to)), or to Segment archive files (--file). Works on the "
        "data directory while no server runs; with a running server pass --url and the admin "
        "token. Progress goes to stderr.",
    )
    bf.add_argument("--filter", help="filter id (not with --snapshot)")
    bf.add_argument(
        "--snapshot",
        help="merge this engine snapshot (Engine.save, eventtally.dask) into --org's live state",
    )
    bf.add_argument("--org", help="organization (default: the only one with that filter)")
    bf.add_argument(
        "--from", dest="start", help="ingest time from (ISO 8601 or Unix seconds; inclusive)"
    )
    bf.add_argument("--to", dest="end", help="ingest time to (exclusive)")
    bf.add_argument("--file", nargs="+", help="archive files: .json/.ndjson/.jsonl, gzipped or not")
    bf.add_argument("--ingest", help="ingest whose timestamp settings apply to --file events")
    bf.add_argument("--force", action="store_true", help="backfill a file again")
    bf.add_argument("--url", help="a running server's base URL (uses POST /admin/v1/backfill)")
    bf.add_argument("--admin-token", help="admin token for --url (or EVENTTALLY_ADMIN_TOKEN)")
    bf.add_argument("--quiet", action="store_true", help="no progress output")
    bf.add_argument("--json", action="store_true", help="print the result as JSON")
    bf.set_defaults(func=cmd_backfill)

    cp = sub.add_parser(
        "compact",
        parents=[common],
        help="compact now: merge old buckets into coarser retention tiers, drop expired data",
        description="Run compaction now (the server also runs it every "
        "server.compaction_interval seconds). Works on the data directory while no server "
        "runs; with a running server pass --url and the admin token.",
    )
    cp.add_argument("--org", help="only this organization (default: all)")
    cp.add_argument("--now", help="compact as of this time (ISO 8601 or Unix seconds)")
    cp.add_argument("--url", help="a running server's base URL (uses POST /admin/v1/compact)")
    cp.add_argument("--admin-token", help="admin token for --url (or EVENTTALLY_ADMIN_TOKEN)")
    cp.add_argument("--json", action="store_true", help="print the reports as JSON")
    cp.set_defaults(func=cmd_compact)

    def actions(
        name: str,
        noun: str,
        func: Callable[[argparse.Namespace], int],
        *,
        list_by_org: bool = True,
        toggle_in_org: bool = False,
    ) -> argparse.ArgumentParser:
        """``name create|list|disable|enable``, all run by ``func``; returns the ``create``
        parser for the caller to add its options to."""
        plural = f"{noun}s"
        group_parser = sub.add_parser(
            name,
            help=f"manage {plural}",
            description=f"Create, list, disable or enable {plural} in the data directory's "
            "metadata. A server running on the same data directory applies the change to "
            "every request it authenticates after the command returns.",
        )
        group = group_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = group.add_parser(
            "create", parents=[common], help=f"create {noun_article(noun)}",
            description=f"Create {noun_article(noun)}.",
        )  # fmt: skip
        p = group.add_parser(
            "list", parents=[common], help=f"list {plural}", description=f"List {plural}."
        )
        if list_by_org:
            p.add_argument("--org", help="only this organization's (default: every organization)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        for action in ("disable", "enable"):
            p = group.add_parser(
                action,
                parents=[common],
                help=f"{action} {noun_article(noun)}",
                description=f"{action.capitalize()} {noun_article(noun)} by id.",
            )
            if toggle_in_org:
                p.add_argument("--org", required=True, help="the filter's organization")
            p.add_argument("id", help=f"the {noun}'s id")
        for p in group.choices.values():
            p.set_defaults(func=func)
        return create

    p = actions("org", "organization", cmd_org, list_by_org=False)
    p.add_argument("id", nargs="?", help="organization id (random if omitted)")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument("--rate-limit", type=float, help="ingest requests/s (default: the server's)")

    p = actions("ingest", "ingest", cmd_ingest)
    p.add_argument("--org", required=True, help="organization the ingest belongs to")
    p.add_argument("--id", help="ingest id, the POST path (random if omitted)")
    p.add_argument("--name", help="display name")
    p.add_argument(
        "--schema",
        choices=[
            "ARRAY_OF_EVENTS",
            "NEWLINE_DELIMITED",
            "OBJECT_WITH_ARRAY_PROPERTY",
            "SINGLE_OBJECT",
        ],
        help="body format (default ARRAY_OF_EVENTS)",
    )
    p.add_argument("--array-path", help="JPath of the event array (OBJECT_WITH_ARRAY_PROPERTY)")
    p.add_argument("--timestamp-path", help="JPath of the event time (default: ingest time)")
    p.add_argument("--timestamp-format", help="ISO_8601 (default), UNIX_SECONDS, ...")
    p.add_argument("--file", help="ingest definition JSON file")
    p.add_argument("--json", help="ingest definition as JSON text")

    p = actions("filter", "filter", cmd_filter, toggle_in_org=True)
    p.add_argument("--org", required=True, help="organization the filter belongs to")
    p.add_argument("--id", help="override the definition's id")
    p.add_argument("--file", help="filter definition JSON file (spec 5.7)")
    p.add_argument("--json", help="filter definition as JSON text")

    p = actions("key", "API key", cmd_key)
    p.add_argument("--org", required=True, help="organization the key belongs to")
    p.add_argument("--name", required=True, help="a label to recognise the key by")
    p.add_argument("--permissions", default="READ,WRITE", help="READ, WRITE or READ,WRITE")
    p.add_argument("--personal", action="store_true", help="a personal (not org-wide) key")
    p.add_argument("--json", action="store_true", help="print the new key's record as JSON")
    return parser


def noun_article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiouAEIOU' else 'a'} {noun}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eventtally`` script and ``python -m eventtally``."""
    args = build_parser().parse_args(argv)
    from .server import ConfigFileError, MetadataError, ProvisioningError

    try:
        return int(args.func(args))
    except (ConfigFileError, MetadataError, ProvisioningError, ValueError, OSError) as exc:
        print(f"eventtally: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
