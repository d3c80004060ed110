"""Serve a config with the server's HTTP front, for ``load_fronts.py``.

Builds the app and ``eventtally.server.httpd.EventtallyHTTPServer`` directly (not through
``eventtally serve``) so a comparison can swap the front: the same-run comparison with the old
thread-per-connection front (``httpd_threaded.py``, since deleted) was taken at commit 252c955
with ``--front threaded``.  ``--log`` turns the access log on (off by default here, so the
figures match earlier runs; ``eventtally serve`` logs).  Prints ``PORT <n>`` once serving;
SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from eventtally.server import load_config, make_app
from eventtally.server.httpd import EventtallyHTTPServer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument(
        "--log", action="store_true", help="log at INFO to stderr (the access log), as `serve` does"
    )
    args = parser.parse_args()
    if args.log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    loaded = load_config(args.config)
    cfg = loaded.server
    app = make_app(cfg, provisioning=loaded)

    def close_app() -> None:
        try:
            app.runtime.close()
        finally:
            app.store.close()

    server = EventtallyHTTPServer((cfg.host, cfg.port), app, on_close=close_app)
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
