"""Regenerate the README's dashboard screenshots (``docs/img/dashboard-*.png``).

Starts a real server on a temporary data directory with a small organization, ingests two hours
of synthetic Segment-like events (seeded, so reruns look alike) and a few malformed batches, then
signs in to ``/ui/`` in headless chromium and saves one screenshot at 1280×800 and one at phone
width (390×844).  Needs chromium and the test extra (Playwright)::

    python tools/dashboard_screenshots.py            # writes docs/img/
    python tools/dashboard_screenshots.py --out /tmp

Not part of the test suite: the images are committed and only change when the page does.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from eventtally.server import load_config, start_server

ROOT = Path(__file__).resolve().parent.parent
KEY = "screenshot-read-write-key-0123456789"

TOML = f"""
[server]
host = "127.0.0.1"
port = 0
data_dir = "data"

[[organizations]]
id = "shop"
name = "Example shop"

[[organizations.api_keys]]
name = "dashboard"
key = "{KEY}"
permissions = ["READ", "WRITE"]

[[organizations.ingests]]
id = "segment"
name = "Segment"
schema = "ARRAY_OF_EVENTS"
timestamp = {{ source = "PROPERTY", path = "@.receivedAt", format = "ISO_8601" }}

[[organizations.filters]]
file = "filters/events.json"

[[organizations.filters]]
file = "filters/orders.json"
"""

FILTERS: dict[str, dict[str, Any]] = {
    "events.json": {
        "id": "events",
        "name": "Events by type",
        "filter": "",
        "groupingItems": [{"grouping": "@.type", "alias": "Type"}],
        "intervalType": "MINUTE",
        "intervalCount": 1,
        "aggregations": [{"id": 1, "name": "Events", "calculations": ["COUNT"]}],
    },
    "orders.json": {
        "id": "orders",
        "name": "Orders by plan",
        "filter": "@.type == 'track' && @.event == 'Order Completed'",
        "groupingItems": [{"grouping": "@.properties.plan", "alias": "Plan"}],
        "intervalType": "MINUTE",
        "intervalCount": 5,
        "aggregations": [
            {
                "id": 1,
                "name": "Order value",
                "calculations": ["SUM", "PERCENTILES"],
                "calculationField": "@.properties.revenue",
            }
        ],
    },
}


def _events(now: float, rng: random.Random) -> list[list[dict[str, Any]]]:
    """One batch per minute of the last two hours, with a daily-looking swell."""
    batches = []
    start = int(now // 60) * 60 - 120 * 60
    for m in range(121):
        t0 = start + m * 60
        n = int(20 + 15 * abs(((m % 60) - 30) / 30) + rng.random() * 10)
        batch = []
        for _ in range(n):
            t = min(now - 1, t0 + rng.random() * 60)
            kind = rng.choices(["track", "page", "screen", "identify"], [5, 3, 1, 1])[0]
            ev: dict[str, Any] = {
                "type": kind,
                "messageId": f"m-{rng.getrandbits(64):x}",
                "receivedAt": datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
            }
            if kind == "track":
                ev["event"] = rng.choice(["Order Completed", "Product Viewed", "Signed Up"])
                ev["properties"] = {
                    "plan": rng.choices(["free", "pro", "team"], [6, 3, 1])[0],
                    "revenue": round(rng.lognormvariate(3, 0.6), 2),
                }
            batch.append(ev)
        batches.append(batch)
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eventtally-shots-") as tmp:
        d = Path(tmp)
        (d / "filters").mkdir()
        for name, defn in FILTERS.items():
            (d / "filters" / name).write_text(json.dumps(defn))
        (d / "eventtally.toml").write_text(TOML)
        loaded = load_config(d / "eventtally.toml")
        server, thread = start_server(loaded.server, provisioning=loaded)
        try:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            headers = {"x-api-token": KEY, "content-type": "application/json"}
            for batch in _events(time.time(), random.Random(14)):
                conn.request("POST", "/segment", json.dumps(batch), headers)
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200, resp.status
            for bad in (b'[{"type": "track", "event": "Signed Up",', b'{"type": "page"}'):
                conn.request("POST", "/segment", bad, headers)
                conn.getresponse().read()
            conn.close()
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"]
                )
                for name, (w, h), anchor in (
                    ("dashboard-1280x800.png", (1280, 800), "#main"),
                    ("dashboard-phone.png", (390, 844), "#filters-panel"),
                ):
                    ctx = browser.new_context(viewport={"width": w, "height": h})
                    page = ctx.new_page()
                    page.goto(server.url + "/ui/")
                    page.fill("input[name=apiKey]", KEY)
                    page.click("#signin button[type=submit]")
                    page.wait_for_function(
                        "() => [...document.querySelectorAll('figure.chart')].length > 0 && "
                        "[...document.querySelectorAll('figure.chart')].every("
                        "f => f.dataset.drawn) && document.querySelector('article.ingest')",
                        timeout=30_000,
                    )
                    page.eval_on_selector(anchor, "e => e.scrollIntoView()")
                    page.screenshot(path=str(args.out / name))
                    print("wrote", args.out / name)
                    ctx.close()
                browser.close()
        finally:
            server.close()
            thread.join(5)


if __name__ == "__main__":
    main()
