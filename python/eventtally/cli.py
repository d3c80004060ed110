"""The ``eventtally`` command: ``serve`` and ``org|ingest|filter|key create|list|enable|disable``.

Guarantees:
- ``eventtally serve`` binds 127.0.0.1:8080 unless told otherwise, applies the config's
  provisioning, and stops gracefully on SIGTERM or SIGINT (stop accepting, finish in-flight
  requests, save every organization, exit 0).
- ``--demo`` creates the quick-start organization, ingest and filter and prints a fresh
  Read+Write key with two ``curl`` lines that work as printed.  Without ``--demo`` nothing is
  created implicitly.
- The config file is ``--config``, else ``./eventtally.toml`` when it exists.  The data directory
  is ``--data-dir``, else the config's ``server.data_dir``, else ``./eventtally-data``.
- Management commands work on the data directory's SQLite directly, also while a server runs
  (it picks the change up within a second).  Raw keys are printed once and never stored.
- Exit status: 0 success, 1 a refused operation (message on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_CONFIG = "eventtally.toml"


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config:
        return Path(args.config)
    default = Path(DEFAULT_CONFIG)
    return default if default.is_file() else None


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
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
    table = [[str(r.get(c, "")) if r.get(c) is not None else "" for c in columns] for r in rows]
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


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ensure_demo, make_server, serve_in_thread

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    server = make_server(cfg, provisioning=loaded)
    app = server.app
    host = str(server.server_address[0])
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    base = f"http://[{shown}]:{server.port}" if ":" in shown else f"http://{shown}:{server.port}"
    print(f"eventtally serving on {server.url} (data: {Path(cfg.data_dir).resolve()})", flush=True)
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
    elif not app.store.snapshot.orgs:
        print(
            "No organizations yet: start with --demo, provision them in eventtally.toml, "
            "or use `eventtally org create`.",
            flush=True,
        )
    thread = serve_in_thread(server)
    while not stop.wait(0.5):
        if not thread.is_alive():
            break
    logging.getLogger("eventtally.server").info("shutting down")
    server.close()
    print("eventtally stopped", flush=True)
    return 0


# ------------------------------------------------------------------------- management


def _manager(args: argparse.Namespace) -> Any:
    from .server import Manager, MetadataStore

    cfg, _ = _load(args)
    return Manager(MetadataStore(cfg.data_dir), max_filters_per_org=cfg.max_filters_per_org)


def cmd_org(args: argparse.Namespace) -> int:
    m = _manager(args)
    if args.action == "create":
        org = m.create_org(args.id, args.name, rate_limit=args.rate_limit)
        print(f"created organization {org.id}")
    elif args.action == "list":
        _print_rows(
            [o.to_dict() for o in m.list_orgs()],
            ["id", "name", "enabled", "rateLimit", "source", "createdAt"],
            args.json,
        )
    else:
        org = m.set_org_enabled(args.id, args.action == "enable")
        print(f"organization {org.id} {'enabled' if org.enabled else 'disabled'}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    m = _manager(args)
    if args.action == "create":
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
    elif args.action == "list":
        _print_rows(
            [i.to_dict() for i in m.list_ingests(args.org)],
            ["id", "organizationId", "name", "schema", "enabled", "source"],
            args.json,
        )
    else:
        ingest = m.set_ingest_enabled(args.id, args.action == "enable")
        print(f"ingest {ingest.id} {'enabled' if ingest.enabled else 'disabled'}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    m = _manager(args)
    if args.action == "create":
        defn = _read_definition(args)
        if defn is None:
            raise ValueError("give the filter definition with --file PATH or --json TEXT")
        if args.id:
            defn["id"] = args.id
        rec = m.create_filter(args.org, defn)
        print(f"created filter {rec.id} in organization {rec.org_id}")
    elif args.action == "list":
        _print_rows(
            [f.to_dict() for f in m.list_filters(args.org)],
            ["id", "organizationId", "name", "enabled", "source"],
            args.json,
        )
    else:
        rec = m.set_filter_enabled(args.org, args.id, args.action == "enable")
        print(f"filter {rec.id} {'enabled' if rec.enabled else 'disabled'}")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    m = _manager(args)
    if args.action == "create":
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
    elif args.action == "list":
        rows = [
            {**k.to_dict(), "permissions": ",".join(k.to_dict()["permissions"])}
            for k in m.list_keys(args.org)
        ]
        _print_rows(
            rows,
            ["id", "organizationId", "name", "permissions", "orgWide", "enabled", "source"],
            args.json,
        )
    else:
        rec = m.set_key_enabled(args.id, args.action == "enable")
        print(f"API key {rec.id} {'enabled' if rec.enabled else 'disabled'}")
    return 0


# ------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config (default: ./eventtally.toml if present)")
    common.add_argument(
        "--data-dir", help="data directory (default: the config's, else ./eventtally-data)"
    )
    parser = argparse.ArgumentParser(
        prog="eventtally",
        description="Self-hosted, Aggregations.io-compatible event aggregation server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP server")
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
    serve.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    serve.set_defaults(func=cmd_serve)

    def actions(name: str, help_text: str) -> argparse._SubParsersAction[Any]:
        p = sub.add_parser(name, help=help_text)
        return p.add_subparsers(dest="action", required=True)

    org = actions("org", "manage organizations")
    p = org.add_parser("create", parents=[common])
    p.add_argument("id", nargs="?", help="organization id (random if omitted)")
    p.add_argument("--name")
    p.add_argument("--rate-limit", type=float, help="ingest requests/s (default: the server's)")
    p = org.add_parser("list", parents=[common])
    p.add_argument("--json", action="store_true")
    for action in ("disable", "enable"):
        p = org.add_parser(action, parents=[common])
        p.add_argument("id")
    for p in org.choices.values():
        p.set_defaults(func=cmd_org)

    ingest = actions("ingest", "manage ingests")
    p = ingest.add_parser("create", parents=[common])
    p.add_argument("--org", required=True)
    p.add_argument("--id", help="ingest id, the POST path (random if omitted)")
    p.add_argument("--name")
    p.add_argument(
        "--schema",
        choices=[
            "ARRAY_OF_EVENTS",
            "NEWLINE_DELIMITED",
            "OBJECT_WITH_ARRAY_PROPERTY",
            "SINGLE_OBJECT",
        ],
    )
    p.add_argument("--array-path", help="JPath of the event array (OBJECT_WITH_ARRAY_PROPERTY)")
    p.add_argument("--timestamp-path", help="JPath of the event time (default: ingest time)")
    p.add_argument("--timestamp-format", help="ISO_8601 (default), UNIX_SECONDS, ...")
    p.add_argument("--file", help="ingest definition JSON file")
    p.add_argument("--json", help="ingest definition as JSON text")
    p = ingest.add_parser("list", parents=[common])
    p.add_argument("--org")
    p.add_argument("--json", action="store_true")
    for action in ("disable", "enable"):
        p = ingest.add_parser(action, parents=[common])
        p.add_argument("id")
    for p in ingest.choices.values():
        p.set_defaults(func=cmd_ingest)

    filt = actions("filter", "manage filters")
    p = filt.add_parser("create", parents=[common])
    p.add_argument("--org", required=True)
    p.add_argument("--id", help="override the definition's id")
    p.add_argument("--file", help="filter definition JSON file (spec 5.7)")
    p.add_argument("--json", help="filter definition as JSON text")
    p = filt.add_parser("list", parents=[common])
    p.add_argument("--org")
    p.add_argument("--json", action="store_true")
    for action in ("disable", "enable"):
        p = filt.add_parser(action, parents=[common])
        p.add_argument("--org", required=True)
        p.add_argument("id")
    for p in filt.choices.values():
        p.set_defaults(func=cmd_filter)

    key = actions("key", "manage API keys")
    p = key.add_parser("create", parents=[common])
    p.add_argument("--org", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--permissions", default="READ,WRITE", help="READ, WRITE or READ,WRITE")
    p.add_argument("--personal", action="store_true", help="a personal (not org-wide) key")
    p.add_argument("--json", action="store_true")
    p = key.add_parser("list", parents=[common])
    p.add_argument("--org")
    p.add_argument("--json", action="store_true")
    for action in ("disable", "enable"):
        p = key.add_parser(action, parents=[common])
        p.add_argument("id")
    for p in key.choices.values():
        p.set_defaults(func=cmd_key)
    return parser


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
