"""eventtally's HTTP server: an Aggregations.io-compatible ingest and Metrics API.

Guarantees:
- :func:`make_app` returns a plain WSGI callable; :func:`start_server` runs it on the stdlib
  event-driven HTTP/1.1 front (``httpd.py``) and returns ``(server, thread)`` for embedding and
  tests (bind 127.0.0.1 by default; port 0 picks a free port, see ``server.port``).
- :func:`make_app` (and so :func:`start_server`) recovers the data directory before returning:
  newest valid snapshot per organization, then the write-ahead log after it.  ``recover=False``
  defers that to ``app.runtime.open()`` (``eventtally serve`` answers ``/healthz`` meanwhile).
- ``server.close()`` is a graceful stop: it stops accepting, finishes in-flight requests, fsyncs
  the log, snapshots every changed organization and closes the metadata store.
- Standard library only (no web framework).  See ``docs/server.md``.

Example::

    from eventtally.server import ServerConfig, start_server
    server, thread = start_server(ServerConfig(port=0, data_dir=tmp))
    ...  # talk to server.url
    server.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .app import EventtallyApp, HTTPError
from .config import ConfigFileError, DurabilityConfig, LoadedConfig, ServerConfig, load_config
from .httpd import EventtallyHTTPServer, listen_socket, serve_in_thread
from .manage import Manager
from .metadata import MetadataError, MetadataStore
from .provisioning import ProvisioningError, apply_provisioning, ensure_demo
from .ratelimit import RateLimiter
from .runtime import BackfillError, BackfillResult, NotReadyError, Runtime, StateLimitError
from .storage import DataDirBusyError

__all__ = [
    "BackfillError",
    "BackfillResult",
    "ConfigFileError",
    "DataDirBusyError",
    "DurabilityConfig",
    "EventtallyApp",
    "EventtallyHTTPServer",
    "HTTPError",
    "LoadedConfig",
    "Manager",
    "MetadataError",
    "MetadataStore",
    "NotReadyError",
    "ProvisioningError",
    "RateLimiter",
    "Runtime",
    "ServerConfig",
    "StateLimitError",
    "apply_provisioning",
    "ensure_demo",
    "load_config",
    "make_app",
    "make_server",
    "serve_in_thread",
    "start_server",
]


def make_app(
    config: ServerConfig | None = None,
    *,
    provisioning: LoadedConfig | None = None,
    clock: Callable[[], float] | None = None,
    start_maintenance: bool = True,
    recover: bool = True,
) -> EventtallyApp:
    """Open the data directory, apply ``provisioning`` (if any), recover the engines.

    The caller owns the result: call ``app.runtime.close()`` then ``app.store.close()`` when
    done (``EventtallyHTTPServer.close`` does this for servers built by :func:`make_server`).
    With ``recover=False`` the app answers 503 (``/readyz`` too) until ``app.runtime.open()``.
    """
    config = (config or ServerConfig()).validate()
    store = MetadataStore(Path(config.data_dir))
    try:
        if provisioning is not None:
            apply_provisioning(store, provisioning, max_filters_per_org=config.max_filters_per_org)
        runtime = Runtime(
            store,
            clock=clock,
            durability=config.durability,
            snapshot_interval=config.snapshot_interval,
            max_state_bytes=config.max_state_bytes_per_org,
            retention=config.retention_for,
            compaction_interval=config.compaction_interval,
            compaction_nice=config.compaction_nice,
        )
        if recover:
            runtime.open()
    except BaseException:
        store.close()
        raise
    if start_maintenance:
        runtime.start()
    return EventtallyApp(runtime, config)


def make_server(
    config: ServerConfig | None = None,
    *,
    provisioning: LoadedConfig | None = None,
    clock: Callable[[], float] | None = None,
    recover: bool = True,
) -> EventtallyHTTPServer:
    """Bind (not yet serving) a server for :func:`make_app`'s app.

    The port is bound first: when it is taken, the ``OSError`` names the address and nothing
    has been created (no data directory, no metadata, no provisioning applied).
    """
    config = (config or ServerConfig()).validate()
    listener = listen_socket(config.host, config.port)
    try:
        app = make_app(config, provisioning=provisioning, clock=clock, recover=recover)
    except BaseException:
        listener.close()
        raise

    def close_app() -> None:
        try:
            app.runtime.close()
        finally:
            app.store.close()

    try:
        return EventtallyHTTPServer(
            (config.host, config.port),
            app,
            keepalive_timeout=config.keepalive_timeout,
            shutdown_grace=config.shutdown_grace,
            on_close=close_app,
            listener=listener,
        )
    except BaseException:
        listener.close()
        close_app()
        raise


def start_server(
    config: ServerConfig | None = None,
    *,
    provisioning: LoadedConfig | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[EventtallyHTTPServer, threading.Thread]:
    """Bind, recover and serve in a daemon thread; returns ``(server, thread)``."""
    server = make_server(config, provisioning=provisioning, clock=clock)
    return server, serve_in_thread(server)
