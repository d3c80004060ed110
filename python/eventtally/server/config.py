"""Server settings: defaults, the ``[server]`` and ``[durability]`` tables of the TOML file, and
command-line overrides.

Guarantees:
- Every setting has a documented default (``docs/server.md``, ``docs/durability.md``); the
  defaults bind to 127.0.0.1 and are durable (write-ahead log, fsync ``always``).
- ``data_dir``, ``tls_cert``, ``tls_key`` and filter ``file = ...`` paths in a config file are
  resolved relative to the directory holding that file, so a config works from any working
  directory.
- Unknown keys in ``[server]`` or ``[durability]`` are an error (a typo must not silently fall
  back to a default).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

from eventtally.durability import FsyncPolicy

from .errors import ConfigFileError

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_MAX_BODY_BYTES",
    "ConfigFileError",
    "DurabilityConfig",
    "LoadedConfig",
    "ServerConfig",
    "load_config",
]

#: The hosted service documents "1 MB". We take the binary reading, 1 MiB: every body the
#: hosted service accepts is accepted here too, and Segment's 300-event batches fit.
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_DATA_DIR = "eventtally-data"
ADMIN_TOKEN_ENV = "EVENTTALLY_ADMIN_TOKEN"
METRICS_TOKEN_ENV = "EVENTTALLY_METRICS_TOKEN"

#: The documented default tiers (``docs/server.md``): minutes for 7 days, hours for 400 days
#: (about 13 months), days forever.
DEFAULT_RETENTION: tuple[dict[str, Any], ...] = (
    {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 7 * 86_400},
    {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 400 * 86_400},
    {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 0},
)


@dataclass(frozen=True)
class DurabilityConfig:
    """The ``[durability]`` table: write-ahead log, snapshots, deduplication."""

    #: Log every accepted batch before answering 200; ``False`` keeps only periodic snapshots
    #: (a crash then loses the batches since the last one).
    wal: bool = True
    #: ``always`` (fdatasync before the 200, group commit), ``interval`` or ``never``.
    fsync: FsyncPolicy = "always"
    fsync_interval_ms: float = 100.0
    #: A WAL segment rotates when it reaches this size.
    segment_bytes: int = 64 << 20
    #: Segments covered by snapshots are deleted unless they are among the newest
    #: ``wal_retention_bytes`` or younger than ``wal_retention_seconds`` (kept for backfill).
    wal_retention_bytes: int = 0
    wal_retention_seconds: float = 0.0
    #: Segments removed after snapshots that are kept as spares and overwritten in place by
    #: later rotations (no new file, no block allocation: cheaper fsyncs); 0 (default) deletes
    #: them.  Costs up to this many x ``segment_bytes`` of disk.  Opt-in: it paid only where
    #: spares were seconds old (benches/README.md, "WAL recycling").
    wal_recycle_segments: int = 0
    #: Reserve each new WAL segment's ``segment_bytes`` when it is created (``posix_fallocate``),
    #: so appends allocate no blocks and grow no file (benches/README.md, "WAL preallocation").
    wal_preallocate: bool = True
    #: zlib level for WAL payloads (0 = stored as received).
    wal_compress_level: int = 0
    #: Seconds between snapshots of changed organizations; ``None`` = ``server.save_interval``;
    #: ``0`` = only at shutdown (and at definition changes and backfills).
    snapshot_interval_s: float | None = None
    #: Snapshot files kept per organization (the older ones are fallbacks).  The log keeps what
    #: the oldest kept snapshot needs: about ``snapshots_keep x snapshot interval`` of traffic.
    snapshots_keep: int = 2
    #: Drop events whose ``messageId`` was seen within the window (off: the hosted service does
    #: not deduplicate).
    dedup: bool = False
    dedup_window_s: float = 3600.0
    dedup_max_ids: int = 1_000_000
    #: Seconds a starting server waits for another process to release the data directory.
    lock_timeout_s: float = 10.0
    #: Cut the newest WAL segment at a damaged record even when valid records follow it
    #: (they are discarded and logged as an ERROR).  For one start, after keeping a copy.
    wal_repair: bool = False

    def validate(self) -> DurabilityConfig:
        """Raise :class:`ConfigFileError` for values that cannot work; return ``self``."""
        if self.fsync not in ("always", "interval", "never"):
            raise ConfigFileError(
                f"durability.fsync: {self.fsync!r} is not one of always, interval, never"
            )
        if self.fsync_interval_ms <= 0:
            raise ConfigFileError("durability.fsync_interval_ms: must be positive")
        if self.segment_bytes < 4096:
            raise ConfigFileError("durability.segment_bytes: must be at least 4096")
        if not 0 <= self.wal_compress_level <= 9:
            raise ConfigFileError("durability.wal_compress_level: must be 0 (off) to 9")
        for name in (
            "wal_retention_bytes", "wal_retention_seconds", "lock_timeout_s", "wal_recycle_segments"
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigFileError(f"durability.{name}: must not be negative")
        if self.snapshot_interval_s is not None and self.snapshot_interval_s < 0:
            raise ConfigFileError("durability.snapshot_interval_s: must not be negative")
        if self.snapshots_keep < 2:
            raise ConfigFileError("durability.snapshots_keep: must be at least 2 (a fallback)")
        if self.dedup_window_s <= 0 or self.dedup_max_ids < 1:
            raise ConfigFileError("durability.dedup_window_s and dedup_max_ids: must be positive")
        return self


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one server process.  All fields are optional in the TOML ``[server]`` table."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR))
    #: Bearer token for ``/admin/v1``; ``None`` disables the admin API (it answers 404).
    admin_token: str | None = None
    #: Largest request body on the wire (after any chunked decoding, before gunzip).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Largest body after ``Content-Encoding: gzip`` is undone.
    max_decompressed_bytes: int = 10 * DEFAULT_MAX_BODY_BYTES
    #: Ingest requests per second per organization; ``0`` disables rate limiting.
    rate_limit: float = 1000.0
    #: Bucket size of the token bucket; ``None`` means one second's worth of ``rate_limit``.
    rate_burst: float | None = None
    max_filters_per_org: int = 100
    #: Seconds between snapshots of organizations whose aggregates changed; ``0`` saves only at
    #: shutdown.
    save_interval: float = 10.0
    #: Seconds an idle keep-alive connection (or a stalled request) is kept open.
    keepalive_timeout: float = 30.0
    #: Seconds a graceful shutdown waits for in-flight requests.
    shutdown_grace: float = 10.0
    #: Log one INFO line per request on the ``eventtally.server`` logger.
    access_log: bool = True
    #: Ingest requests in flight at once (from an authenticated head until the answer); more
    #: are answered 503 with ``Retry-After`` (``0`` = no limit).  Probes, ``/metrics`` and the
    #: dashboard's static files are not counted.
    max_concurrent_requests: int = 64
    #: Read (Metrics API, admin) requests in flight at once, a pool of their own (``0`` = no limit).
    max_concurrent_reads: int = 32
    #: The share of each pool one organization may hold: ``ceil(limit x share)`` slots.
    org_slot_share: float = 0.75
    #: Open connections at most; past it a new connection is answered 503 and closed.
    max_connections: int = 4096
    #: Total bytes of a request head (request line and headers); larger heads get 431.
    max_header_bytes: int = 32768
    #: Seconds from a request's first byte until its whole head has arrived (else 408 and close).
    header_timeout: float = 10.0
    #: Seconds a request body may take at most (else 408 and close) ...
    body_timeout: float = 60.0
    #: ... and the slowest sustained body rate accepted, bytes/second after a 2-second grace
    #: (``0`` = none), so a trickle cannot hold a slot for the whole ``body_timeout``.
    body_min_rate: float = 8192.0
    #: Threads running the application (parse, WAL append, apply); connections need none.
    worker_threads: int = 8
    #: PEM certificate chain and private key: serve HTTPS (TLS 1.2 or newer) instead of HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Peers (IP addresses or CIDR networks) whose ``X-Forwarded-For`` names the client.
    trusted_proxies: tuple[str, ...] = ()
    #: Aggregate state per organization (``Engine.state_bytes()``) past which ingest is refused
    #: with 429 and ``Retry-After`` (``0`` = no limit).
    max_state_bytes_per_org: int = 1 << 30
    #: Value rows one Metrics API answer may hold (across every query of ``?multi=true``); past
    #: it the request is answered 400 with advice to roll up or limit (``0`` = no limit).
    max_answer_rows: int = 5_000_000
    #: Bytes of answer text one Metrics API request may produce (``0`` = no limit).
    max_answer_bytes: int = 512 << 20
    #: Serve the Prometheus text format at ``GET /metrics`` (no key needed unless
    #: ``metrics_token`` is set).
    metrics: bool = True
    #: Read key for ``GET /metrics`` (``Authorization: Bearer <token>`` or ``x-api-token``);
    #: ``None`` (the default) leaves it open.  Also ``EVENTTALLY_METRICS_TOKEN``.
    metrics_token: str | None = None
    #: Retention tiers for filters without a ``retention`` of their own (decision 13), fitted
    #: to each filter's interval.  Default: minutes 7 days, hours 400 days (about 13 months),
    #: days forever.  An empty list keeps everything at full resolution.
    retention: tuple[dict[str, Any], ...] = DEFAULT_RETENTION
    #: Per-organization overrides of ``retention`` (``[server.org_retention]``: org id → tiers).
    org_retention: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    #: Seconds between background compactions (``0`` = only ``eventtally compact`` and the admin
    #: endpoint compact).
    compaction_interval: float = 60.0
    #: Nice increment of the background compaction thread (0-19; Linux, where a thread has its
    #: own priority).  Default 0: measured, +10 made the compaction run longer (and under
    #: saturating ingest 10x longer) without lowering the ingest p99 (benches/README.md).
    #: ``eventtally compact`` and the admin endpoint run at the caller's priority.
    compaction_nice: int = 0
    #: The ``[durability]`` table.
    durability: DurabilityConfig = field(default_factory=DurabilityConfig)

    def retention_for(self, org_id: str) -> list[dict[str, Any]]:
        """The default tiers for ``org_id``'s filters: its override, else the server's."""
        tiers = self.org_retention.get(org_id, self.retention)
        return [dict(t) for t in tiers]

    @property
    def snapshot_interval(self) -> float:
        """Seconds between periodic snapshots (``durability.snapshot_interval_s`` if set, else
        ``save_interval``)."""
        d = self.durability.snapshot_interval_s
        return self.save_interval if d is None else d

    def with_overrides(self, **overrides: Any) -> ServerConfig:
        """Return a copy with the non-``None`` overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> ServerConfig:
        """Raise :class:`ConfigFileError` for values that cannot work; return ``self``."""
        if not 0 <= self.port <= 65535:
            raise ConfigFileError(f"server.port: {self.port} is not a TCP port")
        for name in ("max_body_bytes", "max_decompressed_bytes", "max_filters_per_org"):
            if getattr(self, name) <= 0:
                raise ConfigFileError(f"server.{name}: must be positive")
        for name in (
            "max_concurrent_requests",
            "max_concurrent_reads",
            "max_state_bytes_per_org",
            "max_answer_rows",
            "max_answer_bytes",
        ):
            if getattr(self, name) < 0:
                raise ConfigFileError(f"server.{name}: must not be negative")
        if not 0 < self.org_slot_share <= 1:
            raise ConfigFileError("server.org_slot_share: must be greater than 0 and at most 1")
        for name in ("max_connections", "worker_threads"):
            if getattr(self, name) < 1:
                raise ConfigFileError(f"server.{name}: must be at least 1")
        if self.max_header_bytes < 1024:
            raise ConfigFileError("server.max_header_bytes: must be at least 1024")
        for name in ("header_timeout", "body_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigFileError(f"server.{name}: must be positive")
        if self.body_min_rate < 0:
            raise ConfigFileError("server.body_min_rate: must not be negative")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigFileError("server.tls_cert and server.tls_key: set both or neither")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigFileError(f"server.{name}: {path} is not a readable file")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigFileError(
                    f"server.trusted_proxies: {proxy!r} is not an IP address or network"
                ) from None
        self.durability.validate()
        for name in ("rate_limit", "save_interval", "keepalive_timeout", "shutdown_grace"):
            if getattr(self, name) < 0:
                raise ConfigFileError(f"server.{name}: must not be negative")
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ConfigFileError("server.rate_burst: must be at least 1")
        if self.metrics_token is not None and not self.metrics_token.strip():
            raise ConfigFileError(
                "server.metrics_token: must not be empty (omit it to leave /metrics open)"
            )
        if self.compaction_interval < 0:
            raise ConfigFileError("server.compaction_interval: must not be negative")
        if not 0 <= self.compaction_nice <= 19:
            raise ConfigFileError("server.compaction_nice: must be 0-19")
        _check_retention(list(self.retention), "server.retention")
        for org_id, tiers in self.org_retention.items():
            _check_retention(list(tiers), f"server.org_retention.{org_id}")
        if self.max_decompressed_bytes < self.max_body_bytes:
            raise ConfigFileError("server.max_decompressed_bytes: smaller than max_body_bytes")
        return self

    def resolved_metrics_token(self) -> str | None:
        """The ``/metrics`` token: the config's, else ``EVENTTALLY_METRICS_TOKEN``, or ``None``."""
        return self.metrics_token or os.environ.get(METRICS_TOKEN_ENV) or None

    def resolved_admin_token(self) -> str | None:
        """The admin token from the config, else from ``EVENTTALLY_ADMIN_TOKEN``, else ``None``."""
        token = self.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
        return token


@dataclass(frozen=True)
class LoadedConfig:
    """A parsed config file: the server settings and the raw provisioning tables."""

    server: ServerConfig
    organizations: list[dict[str, Any]]
    #: Directory of the config file; provisioning resolves ``file = ...`` against it.
    base_dir: Path
    path: Path | None = None


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "port": (int,),
    "data_dir": (str,),
    "admin_token": (str,),
    "max_body_bytes": (int,),
    "max_decompressed_bytes": (int,),
    "rate_limit": (int, float),
    "rate_burst": (int, float),
    "max_filters_per_org": (int,),
    "save_interval": (int, float),
    "keepalive_timeout": (int, float),
    "shutdown_grace": (int, float),
    "access_log": (bool,),
    "max_concurrent_requests": (int,),
    "max_concurrent_reads": (int,),
    "org_slot_share": (int, float),
    "max_connections": (int,),
    "max_header_bytes": (int,),
    "header_timeout": (int, float),
    "body_timeout": (int, float),
    "body_min_rate": (int, float),
    "worker_threads": (int,),
    "tls_cert": (str,),
    "tls_key": (str,),
    "trusted_proxies": (list,),
    "max_state_bytes_per_org": (int,),
    "max_answer_rows": (int,),
    "max_answer_bytes": (int,),
    "metrics": (bool,),
    "metrics_token": (str,),
    "retention": (list,),
    "org_retention": (dict,),
    "compaction_interval": (int, float),
    "compaction_nice": (int,),
}
assert set(_FIELD_TYPES) | {"durability"} == {f.name for f in fields(ServerConfig)}

_DURABILITY_TYPES: dict[str, tuple[type, ...]] = {
    "wal": (bool,),
    "fsync": (str,),
    "fsync_interval_ms": (int, float),
    "segment_bytes": (int,),
    "wal_retention_bytes": (int,),
    "wal_retention_seconds": (int, float),
    "wal_recycle_segments": (int,),
    "wal_preallocate": (bool,),
    "wal_compress_level": (int,),
    "snapshot_interval_s": (int, float),
    "snapshots_keep": (int,),
    "dedup": (bool,),
    "dedup_window_s": (int, float),
    "dedup_max_ids": (int,),
    "lock_timeout_s": (int, float),
    "wal_repair": (bool,),
}
assert set(_DURABILITY_TYPES) == {f.name for f in fields(DurabilityConfig)}


def _typed(table: dict[str, Any], types: dict[str, tuple[type, ...]], where: str) -> dict[str, Any]:
    """Check each key of ``table`` against ``types``; ints become floats where floats go."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        allowed = types.get(key)
        if allowed is None:
            known = ", ".join(sorted(types))
            raise ConfigFileError(f"{where}.{key}: unknown setting (known: {known})")
        # bool is a subclass of int; a `port = true` is a mistake, not port 1.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise ConfigFileError(f"{where}.{key}: expected {names}, got {value!r}")
        out[key] = float(cast(float, value)) if allowed == (int, float) else value
    return out


def _durability_from_table(table: object) -> DurabilityConfig:
    if not isinstance(table, dict):
        raise ConfigFileError("durability: expected a table")
    return DurabilityConfig(**_typed(table, _DURABILITY_TYPES, "durability")).validate()


def _check_retention(tiers: list[dict[str, Any]], where: str) -> None:
    """Validates a default tier list with the engine's own rules; the message names the
    field (``server.retention[1].keepSeconds: ...``)."""
    if not tiers:
        return
    from eventtally import ConfigError, _core

    try:
        _core.Engine("[]", "[]").compact(0, json.dumps(tiers))
    except ConfigError as exc:
        text = str(exc).replace("default_retention", where, 1)
        raise ConfigFileError(text) from None
    except (TypeError, ValueError) as exc:
        raise ConfigFileError(f"{where}: {exc}") from None


def _server_from_table(
    table: dict[str, Any], base_dir: Path, durability: DurabilityConfig
) -> ServerConfig:
    kwargs = _typed(table, _FIELD_TYPES, "server")
    for name in ("data_dir", "tls_cert", "tls_key"):
        if name in kwargs:
            path = Path(str(kwargs[name])).expanduser()
            kwargs[name] = path if path.is_absolute() else base_dir / path
    if "trusted_proxies" in kwargs:
        proxies = kwargs["trusted_proxies"]
        if not all(isinstance(p, str) for p in proxies):
            raise ConfigFileError("server.trusted_proxies: expected an array of strings")
        kwargs["trusted_proxies"] = tuple(proxies)
    if "retention" in kwargs:
        kwargs["retention"] = tuple(kwargs["retention"])
    if "org_retention" in kwargs:
        orgs = kwargs["org_retention"]
        for org_id, tiers in orgs.items():
            if not isinstance(tiers, list):
                raise ConfigFileError(f"server.org_retention.{org_id}: expected a list of tiers")
        kwargs["org_retention"] = {k: tuple(v) for k, v in orgs.items()}
    return ServerConfig(**kwargs, durability=durability).validate()


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    """Parse ``path`` (TOML): ``[server]`` and ``[durability]`` settings and
    ``[[organizations]]`` tables."""
    cfg_path = Path(path)
    try:
        with cfg_path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {cfg_path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{cfg_path}: invalid TOML: {exc}") from exc
    base_dir = cfg_path.resolve().parent
    unknown = set(doc) - {"server", "durability", "organizations"}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigFileError(f"{cfg_path}: unknown top-level table(s): {names}")
    server_table = doc.get("server", {})
    if not isinstance(server_table, dict):
        raise ConfigFileError("server: expected a table")
    orgs = doc.get("organizations", [])
    if not isinstance(orgs, list) or not all(isinstance(o, dict) for o in orgs):
        raise ConfigFileError("organizations: expected an array of tables ([[organizations]])")
    return LoadedConfig(
        server=_server_from_table(
            server_table, base_dir, _durability_from_table(doc.get("durability", {}))
        ),
        organizations=orgs,
        base_dir=base_dir,
        path=cfg_path,
    )
