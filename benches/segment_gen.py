"""Deterministic generator of realistic Segment events, for benchmarks and load tests.

What this module guarantees:

- Determinism: the same ``(n, seed, start, span_seconds)`` gives the same events, byte for byte,
  on the same Python version (only ``random.Random(seed)`` and ``hashlib`` are used).
- Realistic shape (spec ``segment-destination.md`` section 8): all six call types (track 60 %,
  page 20 %, screen 10 %, identify 5 %, group 3 %, alias 2 %), Segment's common fields,
  ``context`` (library, ip, locale, timezone, page and userAgent on the web, app/device/os/
  network/screen on mobile, campaign sometimes), a ``messageId``, and ISO 8601 timestamps with
  milliseconds and ``Z``. ``receivedAt``, ``sentAt`` and ``timestamp`` lie within
  ``[start, start + span_seconds)`` and keep Segment's relation
  ``timestamp = receivedAt - (sentAt - originalTimestamp)``.
- Skew: users (default 50,000; Zipf-Mandelbrot ``1/(k+10)``, the busiest about 1 % of events)
  and track event names (40; Zipf ``1/k``) are skewed;
  ``context.device.type`` is ``ios``, ``android`` or ``web``; ``properties.revenue`` is sometimes
  a number, sometimes a numeric string and sometimes missing; ``properties.value`` is
  heavy-tailed (Pareto). Events average about 1 KB of compact JSON.

Library use::

    events = generate_events(100_000, seed=1)
    bodies = batches(events, size=300)   # JSON arrays exactly as Segment posts them

CLI::

    python benches/segment_gen.py --events 100000 --format ndjson --out events.ndjson [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

__all__ = [
    "BENCH_FILTER",
    "BENCH_INGEST",
    "DEFAULT_START",
    "batches",
    "encode_array",
    "encode_ndjson",
    "generate_events",
]

DEFAULT_START = "2024-05-14T00:00:00Z"
DEFAULT_USERS = 50_000

BENCH_INGEST: dict[str, Any] = {
    "id": "bench",
    "name": "Segment (benchmark)",
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": {
        "source": "PROPERTY",
        "path": "@.receivedAt",
        "format": "ISO_8601",
        "onInvalid": "INGEST_TIME",
    },
}
"""Ingest definition matching :func:`batches` bodies (Segment's default destination setup)."""

BENCH_FILTER: dict[str, Any] = {
    "id": "bench",
    "name": "Segment benchmark",
    "filter": "@.type in ['track','page','screen']",
    "groupingItems": [
        {"grouping": "@.type", "alias": None},
        {"grouping": "@.event", "alias": None},
        {"grouping": "@.name", "alias": None},
        {"grouping": "@.context.device.type", "alias": None},
    ],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "Count",
            "calculations": ["COUNT"],
            "calculationField": None,
            "subFilter": None,
        },
        {
            "id": 2,
            "name": "Revenue",
            "calculations": ["SUM", "MIN", "MAX", "AVG"],
            "calculationField": "@.properties.revenue",
            "subFilter": None,
        },
        {
            "id": 3,
            "name": "Unique visitors",
            "calculations": ["APPROX_COUNT_DISTINCT"],
            "calculationField": "@.anonymousId",
            "subFilter": None,
        },
        {
            "id": 4,
            "name": "Value percentiles",
            "calculations": ["PERCENTILES"],
            "calculationField": "@.properties.value",
            "subFilter": None,
        },
    ],
}
"""Filter exercising every calculation over the events of :func:`generate_events`."""

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

TYPE_WEIGHTS = (
    ("track", 60),
    ("page", 20),
    ("screen", 10),
    ("identify", 5),
    ("group", 3),
    ("alias", 2),
)

EVENT_NAMES = (
    "Product Viewed",
    "Page Scrolled",
    "Button Clicked",
    "Product Added",
    "Search Performed",
    "Product List Viewed",
    "Video Playback Started",
    "Cart Viewed",
    "Signed In",
    "Checkout Started",
    "Product Clicked",
    "Order Completed",
    "Video Playback Completed",
    "Promotion Viewed",
    "Product Removed",
    "Signed Up",
    "Checkout Step Viewed",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Coupon Entered",
    "Coupon Applied",
    "Promotion Clicked",
    "Products Searched",
    "Wishlist Product Added",
    "Product Shared",
    "Product Reviewed",
    "Cart Shared",
    "Application Opened",
    "Application Backgrounded",
    "Push Notification Received",
    "Push Notification Tapped",
    "Trial Started",
    "Subscription Started",
    "Plan Selected",
    "Invite Sent",
    "Account Created",
    "Order Refunded",
    "Order Cancelled",
    "Email Link Clicked",
    "Signed Out",
)
_REVENUE_EVENTS = frozenset(
    {
        "Order Completed",
        "Product Added",
        "Checkout Started",
        "Subscription Started",
        "Plan Selected",
        "Order Refunded",
        "Product Viewed",
        "Cart Viewed",
        "Payment Info Entered",
    }
)
PAGES = (
    ("Home", "/", "Initech - Home"),
    ("Pricing", "/pricing", "Pricing | Initech"),
    ("Product", "/products/tps-report-pro", "TPS Report Pro | Initech"),
    ("Search", "/search", "Search results | Initech"),
    ("Blog", "/blog", "Blog | Initech"),
    ("Docs", "/docs/getting-started", "Getting started | Initech Docs"),
    ("Cart", "/cart", "Your cart | Initech"),
    ("Checkout", "/checkout", "Checkout | Initech"),
    ("Signup", "/signup", "Create your account | Initech"),
    ("Careers", "/careers", "Careers at Initech"),
)
SCREENS = (
    "Home",
    "Feed",
    "Product Detail",
    "Cart",
    "Checkout",
    "Settings",
    "Profile",
    "Search",
    "Onboarding",
    "Notifications",
)
CATEGORIES = ("Marketing", "Commerce", "Docs", "Account")
REFERRERS = (
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://t.co/abc123",
    "https://www.linkedin.com/",
    "",
    "https://news.ycombinator.com/",
)
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR", "es-ES", "nl-NL")
TIMEZONES = (
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Europe/Madrid",
    "Europe/Amsterdam",
)
USER_AGENTS = (
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80"
    ),
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15"
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.0.0 Safari/537.36"
    ),
)
IOS_DEVICES = (
    ("iPhone16,2", "iPhone"),
    ("iPhone15,3", "iPhone"),
    ("iPhone14,5", "iPhone"),
    ("iPad13,18", "iPad"),
)
ANDROID_DEVICES = (
    ("samsung", "SM-S918B"),
    ("Google", "Pixel 8"),
    ("Xiaomi", "2201116SG"),
    ("OnePlus", "CPH2449"),
)
CAMPAIGNS = (
    {
        "name": "spring_sale",
        "source": "google",
        "medium": "cpc",
        "term": "tps reports",
        "content": "banner_a",
    },
    {"name": "newsletter_may", "source": "newsletter", "medium": "email"},
    {"name": "retargeting", "source": "facebook", "medium": "paid_social", "content": "carousel"},
)
PLANS = ("free", "starter", "pro", "enterprise")
CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP", "JPY")


def _zipf_cum_weights(n: int, s: float, q: float = 0.0) -> list[float]:
    """Cumulative Zipf-Mandelbrot weights ``1 / (k + q)^s`` for ranks ``k = 1..n``."""
    return list(accumulate(1.0 / ((k + q) ** s) for k in range(1, n + 1)))


_TYPES = tuple(t for t, _ in TYPE_WEIGHTS)
_TYPE_CUM = list(accumulate(w for _, w in TYPE_WEIGHTS))
_EVENT_CUM = _zipf_cum_weights(len(EVENT_NAMES), 1.0)

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_date_cache: dict[int, str] = {}


def _iso(ms: int) -> str:
    """``YYYY-MM-DDThh:mm:ss.mmmZ`` for epoch milliseconds (always three fraction digits)."""
    day, rem = divmod(ms, _DAY_MS)
    date = _date_cache.get(day)
    if date is None:
        date = _date_cache[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
    hh, rem = divmod(rem, 3_600_000)
    mi, rem = divmod(rem, 60_000)
    ss, frac = divmod(rem, 1000)
    return f"{date}T{hh:02d}:{mi:02d}:{ss:02d}.{frac:03d}Z"


def _parse_start(start: str | datetime) -> int:
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00").replace("z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return (start - _EPOCH) // timedelta(milliseconds=1)


def _uuid(rng: random.Random, upper: bool = False) -> str:
    h = f"{rng.getrandbits(128):032x}"
    u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
    return u.upper() if upper else u


class _User:
    """Stable per-user attributes, derived from a hash of (seed, user index)."""

    __slots__ = (
        "anonymous_id",
        "device",
        "email",
        "ip",
        "locale",
        "plan",
        "platform",
        "skew_ms",
        "timezone",
        "ua",
        "user_id",
    )

    def __init__(self, seed: int, index: int) -> None:
        d = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=32).digest()
        self.anonymous_id = (
            f"{d[:4].hex()}-{d[4:6].hex()}-4{d[6:8].hex()[1:]}-"
            f"{'89ab'[d[8] & 3]}{d[9:11].hex()[1:]}-{d[11:17].hex()}"
        )
        self.platform = (
            "web",
            "web",
            "web",
            "web",
            "web",
            "ios",
            "ios",
            "ios",
            "android",
            "android",
        )[d[17] % 10]
        if self.platform == "ios":
            self.anonymous_id = self.anonymous_id.upper()
        known = d[18] % 10 < 6
        self.user_id = f"user_{d[19:26].hex()[:13]}" if known else None
        self.email = f"{d[26:30].hex()}@example.com" if known else None
        self.plan = PLANS[d[30] % len(PLANS)]
        self.locale = LOCALES[d[31] % len(LOCALES)]
        self.timezone = TIMEZONES[d[31] % len(TIMEZONES)]
        self.ip = f"{(d[20] % 200) + 11}.{d[21]}.{d[22]}.{(d[23] % 250) + 2}"
        self.ua = USER_AGENTS[d[24] % len(USER_AGENTS)]
        devices = IOS_DEVICES if self.platform == "ios" else ANDROID_DEVICES
        self.device = devices[d[25] % len(devices)]
        self.skew_ms = 0 if d[27] % 10 else (d[28] - 128) * 500  # 10 % of clocks are off


# --------------------------------------------------------------------------------------------
# Event builders
# --------------------------------------------------------------------------------------------


def _context(
    rng: random.Random, user: _User, platform: str, page: tuple[str, str, str] | None, server: bool
) -> dict[str, Any]:
    if server:
        return {"library": {"name": "@segment/analytics-node", "version": "2.1.2"}, "ip": user.ip}
    ctx: dict[str, Any] = {"ip": user.ip, "locale": user.locale, "timezone": user.timezone}
    if platform == "web":
        _, path, title = page or PAGES[0]
        search = "" if rng.random() < 0.7 else f"?q={rng.randint(1, 999)}"
        ctx["library"] = {"name": "analytics.js", "version": "next-1.64.0"}
        ctx["page"] = {
            "path": path,
            "referrer": REFERRERS[rng.randrange(len(REFERRERS))],
            "search": search,
            "title": title,
            "url": f"https://www.initech.example{path}{search}",
        }
        ctx["userAgent"] = user.ua
        ctx["device"] = {"type": "web"}
        if rng.random() < 0.15:
            ctx["campaign"] = dict(CAMPAIGNS[rng.randrange(len(CAMPAIGNS))])
        return ctx
    ios = platform == "ios"
    maker, model = ("Apple", user.device[0]) if ios else user.device
    ctx["app"] = {
        "name": "InitechGlobal",
        "version": "3.0.1" if rng.random() < 0.8 else "2.9.4",
        "build": "545",
        "namespace": "com.initech.global",
    }
    ctx["device"] = {
        "id": user.anonymous_id,
        "manufacturer": maker,
        "model": model,
        "name": user.device[1] if ios else model,
        "type": platform,
    }
    ctx["library"] = (
        {"name": "analytics-swift", "version": "1.5.11"}
        if ios
        else {"name": "analytics-kotlin", "version": "1.15.0"}
    )
    ctx["network"] = {"cellular": rng.random() < 0.4, "wifi": rng.random() < 0.6}
    ctx["os"] = (
        {"name": "iOS", "version": "17.4.1"} if ios else {"name": "Android", "version": "14"}
    )
    ctx["screen"] = (
        {"density": 3, "height": 932, "width": 430}
        if ios
        else {"density": 2.625, "height": 2400, "width": 1080}
    )
    return ctx


def _value(rng: random.Random) -> float:
    """Heavy-tailed positive value (Pareto, alpha 1.16: the 80/20 rule)."""
    return round(rng.paretovariate(1.16) * 4.0, 2)


def _properties(
    rng: random.Random, kind: str, name: str, page: tuple[str, str, str] | None
) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if kind == "page" and page is not None:
        props = {
            "name": page[0],
            "path": page[1],
            "title": page[2],
            "url": f"https://www.initech.example{page[1]}",
            "referrer": REFERRERS[rng.randrange(len(REFERRERS))],
        }
    elif kind == "screen":
        props = {"name": name, "variation": rng.choice(("control", "blue button", "compact"))}
    else:
        props = {
            "source": rng.choice(("header", "footer", "sidebar", "modal", "inline")),
            "experiment": f"exp_{rng.randint(1, 12)}",
            "variant": rng.choice(("A", "B")),
        }
        if name in _REVENUE_EVENTS or rng.random() < 0.2:
            props["currency"] = CURRENCIES[rng.randrange(len(CURRENCIES))]
            props["product_id"] = f"{rng.getrandbits(96):024x}"
            props["sku"] = f"{rng.randint(10000, 99999)}-{rng.randint(10, 99)}"
            props["quantity"] = rng.randint(1, 4)
            r = rng.random()
            revenue = round(rng.lognormvariate(3.0, 1.0), 2)
            if r < 0.70:
                props["revenue"] = revenue
            elif r < 0.90:
                props["revenue"] = f"{revenue:.2f}"  # numeric string, as some sources send
    if rng.random() < 0.8:
        props["value"] = _value(rng)
    return props


def _event(
    rng: random.Random, user: _User, kind: str, received: int, start: int, end: int
) -> dict[str, Any]:
    if kind == "page":
        platform = "web"
    elif kind == "screen":
        platform = (
            user.platform if user.platform != "web" else ("ios", "android")[rng.getrandbits(1)]
        )
    else:
        platform = user.platform
    server = kind in ("identify", "group") and rng.random() < 0.5
    page = PAGES[rng.randrange(len(PAGES))] if platform == "web" else None
    # Segment timing: sentAt/originalTimestamp are device clock; timestamp = receivedAt - queue.
    queue = int(rng.expovariate(1 / 300.0))
    if platform != "web" and rng.random() < 0.05:
        queue += rng.randint(10_000, 600_000)  # offline mobile queue
    queue = min(queue, received - start)
    sent = min(max(received - rng.randint(15, 400) + user.skew_ms, start), end - 1)
    original = sent - queue
    timestamp = received - queue
    event: dict[str, Any] = {
        "anonymousId": user.anonymous_id,
        "channel": "server" if server else ("client" if platform == "web" else "mobile"),
        "context": _context(rng, user, platform, page, server),
        "integrations": {},
    }
    if platform == "web" and not server:
        event["messageId"] = f"ajs-next-{rng.getrandbits(128):032x}"
    elif server:
        event["messageId"] = f"node-next-{received}-{_uuid(rng)}"
    else:
        event["messageId"] = _uuid(rng, upper=platform == "ios")
    event["originalTimestamp"] = _iso(original)
    event["projectId"] = {
        "web": "Xy7sEXAMPLEsrc01",
        "ios": "Ios9EXAMPLEsrc02",
        "android": "And5EXAMPLEsrc05",
    }[platform]
    event["receivedAt"] = _iso(received)
    event["sentAt"] = _iso(sent)
    event["timestamp"] = _iso(timestamp)
    event["type"] = kind
    event["userId"] = user.user_id
    event["version"] = 2
    if kind == "track":
        name = EVENT_NAMES[bisect.bisect(_EVENT_CUM, rng.random() * _EVENT_CUM[-1])]
        event["event"] = name
        event["properties"] = _properties(rng, kind, name, page)
    elif kind == "page":
        assert page is not None
        event["name"] = page[0]
        event["category"] = CATEGORIES[rng.randrange(len(CATEGORIES))]
        event["properties"] = _properties(rng, kind, page[0], page)
    elif kind == "screen":
        name = SCREENS[rng.randrange(len(SCREENS))]
        event["name"] = name
        event["properties"] = _properties(rng, kind, name, None)
    elif kind == "identify":
        event["traits"] = {
            "email": user.email,
            "plan": user.plan,
            "logins": rng.randint(1, 500),
            "createdAt": _iso(start - rng.randint(1, 900) * _DAY_MS),
            "address": {"city": "Austin", "country": "USA"},
        }
    elif kind == "group":
        event["groupId"] = f"{rng.getrandbits(96):024x}"
        event["traits"] = {
            "name": "Initech",
            "industry": "Technology",
            "employees": rng.randint(5, 5000),
            "plan": user.plan,
            "website": "https://initech.example",
        }
    else:  # alias
        event["previousId"] = user.anonymous_id
        event["userId"] = user.user_id or f"user_{rng.getrandbits(52):013x}"
    if platform == "web" and not server and rng.random() < 0.5:
        event["_metadata"] = {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
    return event


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_events(
    n: int,
    seed: int = 0,
    start: str | datetime = DEFAULT_START,
    span_seconds: int = 86_400,
    users: int = DEFAULT_USERS,
) -> list[dict[str, Any]]:
    """``n`` Segment events with ``receivedAt`` in ``[start, start + span_seconds)``, roughly
    in order (each event is jittered within its own slice of the span)."""
    if n < 0 or span_seconds <= 0 or users < 1:
        raise ValueError("n must be >= 0, span_seconds and users > 0")
    rng = random.Random(seed)
    start_ms = _parse_start(start)
    span_ms = span_seconds * 1000
    end_ms = start_ms + span_ms
    user_cum = _zipf_cum_weights(users, 1.0, 10.0)  # top user ~1 % of events
    user_total = user_cum[-1]
    cache: dict[int, _User] = {}
    events: list[dict[str, Any]] = []
    for i in range(n):
        received = start_ms + int((i + rng.random()) * span_ms / n)
        kind = _TYPES[bisect.bisect(_TYPE_CUM, rng.random() * _TYPE_CUM[-1])]
        k = bisect.bisect(user_cum, rng.random() * user_total)
        user = cache.get(k)
        if user is None:
            user = cache[k] = _User(seed, k)
        events.append(_event(rng, user, kind, received, start_ms, end_ms))
    return events


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def encode_ndjson(events: list[dict[str, Any]]) -> bytes:
    """One compact JSON object per line, ``\\n``-terminated, UTF-8."""
    return "".join(_dumps(e) + "\n" for e in events).encode()


def encode_array(events: list[dict[str, Any]]) -> bytes:
    """One compact JSON array, UTF-8 (what Segment posts for a batch)."""
    return ("[" + ",".join(_dumps(e) for e in events) + "]").encode()


def batches(events: list[dict[str, Any]], size: int = 300) -> list[bytes]:
    """Split into JSON-array bodies of at most ``size`` events (Segment's default batch is 300)."""
    if size < 1:
        raise ValueError("size must be positive")
    return [encode_array(events[i : i + size]) for i in range(0, len(events), size)]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the measured average event size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, required=True, help="number of events")
    ap.add_argument("--format", choices=("ndjson", "array"), default="ndjson")
    ap.add_argument("--out", required=True, help="output file ('-' for stdout)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default=DEFAULT_START, help="ISO 8601 start of the time span")
    ap.add_argument("--span-seconds", type=int, default=86_400)
    ap.add_argument("--users", type=int, default=DEFAULT_USERS)
    args = ap.parse_args(argv)
    events = generate_events(
        args.events,
        seed=args.seed,
        start=args.start,
        span_seconds=args.span_seconds,
        users=args.users,
    )
    data = encode_ndjson(events) if args.format == "ndjson" else encode_array(events)
    if args.out == "-":
        sys.stdout.buffer.write(data)
        report = sys.stderr
    else:
        with open(args.out, "wb") as fh:
            fh.write(data)
        report = sys.stdout
    event_bytes = sum(len(_dumps(e).encode()) for e in events)
    avg = event_bytes / len(events) if events else 0.0
    print(
        f"wrote {len(events)} events ({len(data)} bytes, {args.format}) to {args.out}; "
        f"average event size {avg:.0f} bytes",
        file=report,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
