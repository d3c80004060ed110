"""The dashboard at ``/ui/`` in a real headless browser (Playwright driving Debian's chromium).

Not collected on its own (the name does not match ``test_*.py``): ``test_ui_browser.py`` runs this
file in a child pytest in its own process group with a hard timeout, so a hung browser is killed
instead of stalling the suite.  Every Playwright wait has its own timeout too.

The server is the real one, on 127.0.0.1 port 0, with a fixed clock at 09:23:30 UTC on the day of
the fixtures, so the 09:23 bucket is the incomplete interval.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventtally.server import EventtallyHTTPServer
from tests.server_support import (
    BASE_TOML,
    INGEST,
    READ_KEY,
    WRITE_KEY,
    Client,
    fixture_bytes,
    parse_dt,
    running_server,
)

playwright_sync = pytest.importorskip("playwright.sync_api")

NOW = parse_dt("2024-05-14T09:23:30Z").timestamp()
WAIT_MS = 15_000

PCT_FILTER: dict[str, Any] = {
    "id": "revenue",
    "name": "Revenue by event",
    "filter": "@.type == 'track'",
    "groupingItems": [{"grouping": "@.event", "alias": "Event"}],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "Order value",
            "calculations": ["PERCENTILES", "MAX"],
            "calculationField": "@.properties.revenue",
            "subFilter": None,
        },
    ],
}
# The percentile filter belongs to acme: insert it before the second organization's table.
ORGS = BASE_TOML.replace(
    '[[organizations]]\nid = "beta"',
    '[[organizations.filters]]\nfile = "filters/revenue.json"\n\n[[organizations]]\nid = "beta"',
)


def _tracks() -> bytes:
    events = []
    for minute, values in ((20, [5, 7, 11]), (21, [3, 30]), (22, [8]), (23, [2, 4, 6, 50])):
        for i, v in enumerate(values):
            events.append(
                {
                    "type": "track",
                    "event": "Order Completed" if i % 2 == 0 else "Refund",
                    "properties": {"revenue": v},
                    "receivedAt": f"2024-05-14T09:{minute:02d}:{10 + i:02d}.000Z",
                }
            )
    return json.dumps(events).encode()


def chromium_path() -> str:
    path = (
        os.environ.get("EVENTTALLY_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    assert path, "chromium not found (apt-get install -y chromium, or set EVENTTALLY_CHROMIUM)"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            timeout=60_000,
            # root in CI has no user namespace for the sandbox; /dev/shm may be tiny in containers
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield b
        finally:
            b.close()


class Loaded:
    """The server with the fixtures ingested, and what the ingest endpoint answered."""

    def __init__(self, server: EventtallyHTTPServer) -> None:
        self.server = server
        self.client = Client(server)
        self.accepted_events = 0
        self.refused: list[str] = []
        for name in ("request-body-batch.json", "request-body-single-track.json"):
            self._send(fixture_bytes(name))
        self._send(_tracks())
        for bad in (b"[{", b'{"an": "object"}'):
            reply = self.client.ingest(bad)
            assert reply.status == 400
            self.refused.append(reply.message)

    def _send(self, body: bytes) -> None:
        reply = self.client.ingest(body)
        assert reply.status == 200, reply.body
        doc = json.loads(body)
        self.accepted_events += len(doc) if isinstance(doc, list) else 1


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    directory = tmp_path_factory.mktemp("ui")
    with running_server(
        directory, orgs=ORGS, clock=lambda: NOW, filters={"revenue.json": PCT_FILTER}
    ) as srv:
        state = Loaded(srv)
        yield state
        state.client.close()


@pytest.fixture
def page(browser: Any, loaded: Loaded) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def sign_in(page: Any, server: EventtallyHTTPServer, key: str = READ_KEY) -> None:
    page.goto(server.url + "/ui/")
    page.fill("input[name=apiKey]", key)
    page.click("#signin button[type=submit]")


def wait_charts(page: Any, draws: int = 1) -> None:
    """Until every chart has drawn at least ``draws`` answers and the health panel is shown."""
    page.wait_for_function(
        """(draws) => {
            const figs = [...document.querySelectorAll('figure.chart')];
            return figs.length > 0 && document.querySelector('article.ingest') &&
                figs.every(f => Number(f.dataset.drawn || 0) >= draws &&
                    !f.hasAttribute('aria-busy'));
        }""",
        arg=draws,
        timeout=WAIT_MS,
    )


def label(groupings: dict[str, str] | None) -> str:
    """The page's series label (dashboard.js ``seriesLabel``)."""
    if not groupings:
        return "all events"
    return ", ".join(
        f"{k} = {groupings[k] if groupings[k] != '' else '(empty)'}" for k in sorted(groupings)
    )


def chart_points(page: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.eval_on_selector_all(
        "figure.chart",
        """figs => figs.map(f => ({
            filterId: f.dataset.filterId,
            aggregationId: Number(f.dataset.aggregationId),
            calculation: f.dataset.calculation,
            query: JSON.parse(f.dataset.query),
            points: [...f.querySelectorAll('svg.plot circle.pt')].map(c => ({
                dt: c.dataset.dt, series: c.dataset.series, value: Number(c.dataset.value),
                incomplete: c.classList.contains('incomplete')})),
            tableRows: f.querySelectorAll('table.chart-table tbody tr').length,
            legend: [...f.querySelectorAll('.legend-label')].map(e => e.textContent),
        }))""",
    )
    return result


def test_wrong_keys_show_the_servers_message(page: Any, loaded: Loaded) -> None:
    """An unknown key and a key without Read show the API's own message; nothing is kept."""
    for key in ("not-a-key", WRITE_KEY):
        expected = loaded.client.request("GET", "/api/v1/filter-definitions", key=key).message
        sign_in(page, loaded.server, key)
        page.wait_for_function(
            "() => document.getElementById('signin-error').textContent !== ''", timeout=WAIT_MS
        )
        assert page.text_content("#signin-error") == expected
        assert page.is_hidden("#dashboard")
        assert page.evaluate("() => sessionStorage.length") == 0
    assert expected == "This API key does not have the Read permission"


def test_filters_charts_and_health_match_the_api(page: Any, loaded: Loaded) -> None:
    """The filter list equals /filter-definitions; each chart's SVG has one point per row of
    the matching /metrics/results answer; ingest counters equal what ingest answered."""
    urls: list[str] = []
    tokens: set[str | None] = set()

    def on_request(req: Any) -> None:
        urls.append(req.url)
        if "/api/v1/" in req.url:
            tokens.add(req.headers.get("x-api-token"))

    page.on("request", on_request)
    sign_in(page, loaded.server)
    page.fill("#topN", "50")
    page.press("#topN", "Tab")  # "change": every chart reloads with N = 50
    wait_charts(page, draws=2)

    # The key: in sessionStorage only, and only ever in the header.
    assert page.evaluate("() => sessionStorage.getItem('eventtally.apiKey')") == READ_KEY
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""
    assert tokens == {READ_KEY}
    assert not [u for u in urls if READ_KEY in u]

    # Filters, as /filter-definitions returns them.
    defs = loaded.client.request("GET", "/api/v1/filter-definitions", key=READ_KEY).json()
    shown = page.eval_on_selector_all(
        "article.filter",
        """arts => arts.map(a => ({
            id: a.querySelector('.filter-id').textContent,
            name: a.querySelector('.filter-name').textContent,
            condition: a.querySelector('.filter-condition').textContent,
            interval: a.querySelector('.filter-interval').textContent,
            groupings: [...a.querySelectorAll('.grouping')].map(g => [
                g.querySelector('.grouping-alias').textContent,
                g.querySelector('.grouping-path').textContent]),
            aggregations: [...a.querySelectorAll('.aggregation')].map(g => ({
                id: Number(g.dataset.aggregationId),
                name: g.querySelector('.aggregation-name').textContent,
                calculations: g.querySelector('.aggregation-calculations').textContent,
                field: (g.querySelector('.aggregation-field') || {}).textContent || null})),
        }))""",
    )
    expected = [
        {
            "id": d["id"],
            "name": d["name"],
            "condition": d.get("filter") or "",
            "interval": f"{d['intervalCount']} × {d['intervalType']}",
            "groupings": [
                [g.get("alias") or g["grouping"], g["grouping"]]
                for g in d.get("groupingItems") or []
            ],
            "aggregations": [
                {
                    "id": a["id"],
                    "name": a["name"],
                    "calculations": ", ".join(a["calculations"]),
                    "field": a.get("calculationField"),
                }
                for a in d["aggregations"]
            ],
        }
        for d in defs
    ]
    assert shown == expected
    assert len(defs) == 3

    # One chart per filter × aggregation × calculation, points equal to the API's rows.
    charts = chart_points(page)
    assert sorted((c["filterId"], c["aggregationId"], c["calculation"]) for c in charts) == sorted(
        (d["id"], a["id"], calc)
        for d in defs
        for a in d["aggregations"]
        for calc in a["calculations"]
    )
    nonempty = 0
    for c in charts:
        q = c["query"]
        assert (q["filterId"], q["aggregationId"], q["calculation"]) == (
            c["filterId"], c["aggregationId"], c["calculation"],
        )  # fmt: skip
        assert parse_dt(q["startTime"]).timestamp() <= NOW < parse_dt(q["endTime"]).timestamp()
        rows = loaded.client.results(q).json()
        want = sorted((r["dt"], label(r["groupings"]), float(r["value"])) for r in rows)
        got = sorted((p["dt"], p["series"], p["value"]) for p in c["points"])
        assert got == want, c["filterId"]
        assert c["tableRows"] == len({r["dt"] for r in rows})
        defn = next(d for d in defs if d["id"] == c["filterId"])
        length = 60 if defn["intervalType"] == "MINUTE" else 3600
        for p in c["points"]:
            assert p["incomplete"] == (parse_dt(p["dt"]).timestamp() + length > NOW), p
        nonempty += bool(rows)
    assert nonempty >= 4  # the fixtures reach every filter

    # Ingest health: counters equal the accepted and refused batches.
    card = f"article.ingest[data-ingest-id='{INGEST}']"
    assert page.text_content(f"{card} .ingest-accepted dd") == str(loaded.accepted_events)
    assert page.text_content(f"{card} .ingest-received dd") == str(loaded.accepted_events)
    assert page.text_content(f"{card} .ingest-batches dd") == "3"
    refused = page.text_content(f"{card} .ingest-rejected dd") or ""
    assert refused == f"{len(loaded.refused)} (400: {len(loaded.refused)})"
    messages = page.eval_on_selector_all(
        f"{card} tr.rejected-batch",
        "rows => rows.map(r => r.querySelector('.message').textContent)",
    )
    assert messages == loaded.refused[::-1]
    assert page.text_content(f"{card} tr.rejected-batch .body-prefix") == '{"an": "object"}'
    assert page.text_content(".server-version dd")


def test_top_n_and_percentile_controls(page: Any, loaded: Loaded) -> None:
    """N = 1 keeps the series with the largest total; the percentile field re-queries."""
    sign_in(page, loaded.server)
    wait_charts(page)
    page.fill("#topN", "1")
    page.press("#topN", "Tab")
    wait_charts(page, draws=2)
    for c in chart_points(page):
        rows = loaded.client.results(c["query"]).json()
        totals: dict[str, float] = {}
        for r in rows:
            totals[label(r["groupings"])] = totals.get(label(r["groupings"]), 0.0) + r["value"]
        if not totals:
            continue
        best = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        assert c["legend"] == [best]
        assert {p["series"] for p in c["points"]} == {best}
        assert len(c["points"]) == sum(1 for r in rows if label(r["groupings"]) == best)
    fig = "figure.chart[data-calculation='PERCENTILES']"
    page.fill(f"{fig} input.percentile", "50")
    page.press(f"{fig} input.percentile", "Tab")
    page.wait_for_function(
        f'() => JSON.parse(document.querySelector("{fig}").dataset.query).percentile === 0.5'
        f" && !document.querySelector(\"{fig}\").hasAttribute('aria-busy')",
        timeout=WAIT_MS,
    )
    c = next(c for c in chart_points(page) if c["calculation"] == "PERCENTILES")
    rows = loaded.client.results(c["query"]).json()
    assert rows and len(c["points"]) == sum(
        1 for r in rows if label(r["groupings"]) == c["legend"][0]
    )


def test_keyboard_only_use(page: Any, loaded: Loaded) -> None:
    """Type the key and Enter; Tab reaches a chart; arrow keys read its points aloud."""
    page.goto(loaded.server.url + "/ui/")
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.name === 'apiKey'"
    )
    page.keyboard.type(READ_KEY)
    page.keyboard.press("Enter")
    wait_charts(page)
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('svg.plot')"):
            break
    else:
        pytest.fail("Tab never reached a chart")
    fig_id = page.evaluate("() => document.activeElement.closest('figure').id")
    page.keyboard.press("ArrowRight")
    readout = page.text_content(f"#{fig_id} .readout") or ""
    count = page.eval_on_selector_all(f"#{fig_id} circle.pt", "c => c.length")
    assert readout.endswith(f"point 1 of {count}"), readout
    page.keyboard.press("End")
    assert (page.text_content(f"#{fig_id} .readout") or "").endswith(f"point {count} of {count}")


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)])
def test_readable_without_horizontal_scrolling(
    browser: Any, loaded: Loaded, size: tuple[int, int]
) -> None:
    """At 1280×800 and at phone width nothing is wider than the viewport."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    context.set_default_timeout(WAIT_MS)
    try:
        pg = context.new_page()
        sign_in(pg, loaded.server)
        wait_charts(pg)
        assert pg.evaluate("() => document.documentElement.scrollWidth") <= size[0]
        widths = pg.eval_on_selector_all(
            "svg.plot", "s => s.map(e => e.getBoundingClientRect().right)"
        )
        assert widths and max(widths) <= size[0]
    finally:
        context.close()


def test_auto_refresh_polls_at_most_once_per_interval(page: Any, loaded: Loaded) -> None:
    """With a paused fake clock, five minutes poll each 1-minute chart 1–5 times and the
    1-hour chart not at all."""
    polls: dict[str, int] = {}

    def on_request(req: Any) -> None:
        if req.url.endswith("/api/v1/metrics/results") and req.post_data:
            q = json.loads(req.post_data)
            key = f"{q['filterId']}/{q['aggregationId']}/{q['calculation']}"
            polls[key] = polls.get(key, 0) + 1

    start = datetime.fromtimestamp(NOW, UTC)
    page.clock.install(time=start)
    page.goto(loaded.server.url + "/ui/")
    page.clock.pause_at(start + timedelta(seconds=1))
    page.fill("input[name=apiKey]", READ_KEY)
    page.click("#signin button[type=submit]")
    wait_charts(page)
    page.on("request", on_request)
    page.clock.run_for(5 * 60_000)
    minute_charts = ["by-type/1/COUNT", "by-type/2/SUM", "revenue/1/PERCENTILES", "revenue/1/MAX"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(polls.get(k) for k in minute_charts):
        page.evaluate("() => 0")  # lets Playwright deliver the request events
        time.sleep(0.05)
    for k in minute_charts:
        assert 1 <= polls.get(k, 0) <= 5, polls
    assert polls.get("all-events/1/COUNT", 0) == 0, polls
