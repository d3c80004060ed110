"""Serve a config with either HTTP front, for ``load_fronts.py``'s same-run comparison.

``--front asyncio`` is the server's front (``eventtally.server.httpd``); ``--front threaded`` is
the thread-per-connection front it replaced (``httpd_threaded``), kept only while the comparison
numbers are taken.  Prints ``PORT <n>`` once serving; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from eventtally.server import load_config, make_app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--front", choices=["asyncio", "threaded"], default="asyncio")
    args = parser.parse_args()
    loaded = load_config(args.config)
    cfg = loaded.server
    app = make_app(cfg, provisioning=loaded)
    module = importlib.import_module(
        "eventtally.server.httpd" if args.front == "asyncio" else "eventtally.server.httpd_threaded"
    )

    def close_app() -> None:
        try:
            app.runtime.close()
        finally:
            app.store.close()

    server = module.EventtallyHTTPServer(
        (cfg.host, cfg.port),
        app,
        keepalive_timeout=cfg.keepalive_timeout,
        shutdown_grace=cfg.shutdown_grace,
        on_close=close_app,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"PORT {server.port}", flush=True)
    stop.wait()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
