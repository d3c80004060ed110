"""Server settings: defaults, the ``[server]`` and ``[durability]`` tables of the TOML file, and
command-line overrides.

Guarantees:
- Every setting has a documented default (``docs/server.md``, ``docs/durability.md``); the
  defaults bind to 127.0.0.1 and are durable (write-ahead log, fsync ``always``).
- ``data_dir`` and filter ``file = ...`` paths in a config file are resolved relative to the
  directory holding that file, so a config works from any working directory.
- Unknown keys in ``[server]`` or ``[durability]`` are an error (a typo must not silently fall
  back to a default).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

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


class ConfigFileError(ValueError):
    """The TOML file is unreadable or has a wrong shape; the message names the key."""


FsyncPolicy = Literal["always", "interval", "never"]


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
        for name in ("wal_retention_bytes", "wal_retention_seconds", "lock_timeout_s"):
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
    #: Requests processed at once; more are answered 503 with ``Retry-After`` (``0`` = no limit).
    #: ``/healthz``, ``/readyz`` and ``/metrics`` are not counted.
    max_concurrent_requests: int = 64
    #: Aggregate state per organization (``Engine.state_bytes()``) past which ingest is refused
    #: with 429 and ``Retry-After`` (``0`` = no limit).
    max_state_bytes_per_org: int = 1 << 30
    #: Value rows one Metrics API answer may hold (across every query of ``?multi=true``); past
    #: it the request is answered 400 with advice to roll up or limit (``0`` = no limit).
    max_answer_rows: int = 5_000_000
    #: Bytes of answer text one Metrics API request may produce (``0`` = no limit).
    max_answer_bytes: int = 512 << 20
    #: Serve the Prometheus text format at ``GET /metrics`` (no key needed).
    metrics: bool = True
    #: The ``[durability]`` table.
    durability: DurabilityConfig = field(default_factory=DurabilityConfig)

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
            "max_state_bytes_per_org",
            "max_answer_rows",
            "max_answer_bytes",
        ):
            if getattr(self, name) < 0:
                raise ConfigFileError(f"server.{name}: must not be negative")
        self.durability.validate()
        for name in ("rate_limit", "save_interval", "keepalive_timeout", "shutdown_grace"):
            if getattr(self, name) < 0:
                raise ConfigFileError(f"server.{name}: must not be negative")
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ConfigFileError("server.rate_burst: must be at least 1")
        if self.max_decompressed_bytes < self.max_body_bytes:
            raise ConfigFileError("server.max_decompressed_bytes: smaller than max_body_bytes")
        return self

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
    "max_state_bytes_per_org": (int,),
    "max_answer_rows": (int,),
    "max_answer_bytes": (int,),
    "metrics": (bool,),
}
assert set(_FIELD_TYPES) | {"durability"} == {f.name for f in fields(ServerConfig)}

_DURABILITY_TYPES: dict[str, tuple[type, ...]] = {
    "wal": (bool,),
    "fsync": (str,),
    "fsync_interval_ms": (int, float),
    "segment_bytes": (int,),
    "wal_retention_bytes": (int,),
    "wal_retention_seconds": (int, float),
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


def _server_from_table(
    table: dict[str, Any], base_dir: Path, durability: DurabilityConfig
) -> ServerConfig:
    kwargs = _typed(table, _FIELD_TYPES, "server")
    if "data_dir" in kwargs:
        path = Path(str(kwargs["data_dir"])).expanduser()
        kwargs["data_dir"] = path if path.is_absolute() else base_dir / path
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
