"""A second event generator, shaped unlike ``segment_gen``: for benchmarks that must not fit one
data layout.

What this module guarantees:

- Determinism: the same ``(n, seed)`` gives the same events, byte for byte, on the same Python
  version (only ``random.Random(seed)`` is used).
- The fields the SEG-ROLLUP workload reads sit at the same paths as in Segment's events
  (``type``, ``event``, ``name``, ``receivedAt`` ISO 8601 with milliseconds and ``Z``,
  ``anonymousId``, ``context.device.type``, ``properties.revenue``, ``properties.value``), so
  ``segment_gen.BENCH_FILTER`` applies unchanged; everything else differs on purpose:
  - other field order: ``type`` and the name first, ``properties`` before a large ``context``,
    the identifiers and timestamps last (the scanner meets the workload's fields in a new
    order and must skip a deep object before ``receivedAt``);
  - a deeper ``context``: ``device.hardware.cpu``/``display``, ``session.attribution.utm
    .campaign`` with arrays of objects, ``experiments`` (an array of objects), nesting six deep;
  - longer strings: user agents of 250-400 characters, URLs with long query strings, a
    free-text ``properties.description`` of 100-600 characters with escapes (``\\"``, ``\\n``,
    ``\\u00e9``).
- Skew: types (track 55 %, page 25 %, screen 10 %, identify 6 %, group 2 %, alias 2 %),
  event names (Zipf over 30) and users (Zipf over 20,000); ``properties.revenue`` is a number,
  a numeric string, a non-numeric string (skipped by SUM) or missing; ``properties.value`` is
  log-normal. Events average about 1.8 KB of compact JSON.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

__all__ = ["generate_events"]

_START_MS = int(datetime(2024, 5, 14, tzinfo=UTC).timestamp() * 1000)
_TYPES = ("track", "page", "screen", "identify", "group", "alias")
_TYPE_CUM = list(accumulate((55, 25, 10, 6, 2, 2)))
_NAMES = tuple(
    f"{verb} {noun}"
    for verb in ("Viewed", "Opened", "Shared")
    for noun in (
        "Article",
        "Basket",
        "Coupon",
        "Dashboard",
        "Episode",
        "Feed",
        "Gallery",
        "Invoice",
        "Playlist",
        "Report",
    )
)
_NAME_CUM = list(accumulate(1.0 / (k + 1) for k in range(len(_NAMES))))
_SCREENS = ("Home", "Search Results", "Settings", "Checkout", "Profile", "Player")
_WORDS = (
    "quarterly",
    "naïve",
    "résumé",
    "sync",
    "latency",
    '"quoted"',
    "back\\slash",
    "line\nbreak",
    "tab\there",
    "café",
    "über",
    "emoji \U0001f680",
    "ellipsis…",
    "plain",
    "token",
    "schema",
)
_DEVICE_TYPES = ("ios", "android", "web", "tv", "desktop")


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _text(rng: random.Random, lo: int, hi: int) -> str:
    want = rng.randint(lo, hi)
    out: list[str] = []
    size = 0
    while size < want:
        w = _WORDS[rng.randrange(len(_WORDS))]
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def _user_agent(rng: random.Random) -> str:
    parts = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:126.0)",
        "AppleWebKit/537.36 (KHTML, like Gecko)",
        f"Chrome/{rng.randint(100, 130)}.0.{rng.randint(1000, 9999)}.{rng.randint(10, 99)}",
        "Safari/537.36",
    ]
    extra = [
        f"Plugin{i}/{rng.randint(1, 9)}.{rng.randint(0, 99)}" for i in range(rng.randint(8, 16))
    ]
    return " ".join(parts + extra)


def _context(rng: random.Random, user: int) -> dict[str, Any]:
    return {
        "library": {"name": "shaped-sdk", "version": f"3.{rng.randint(0, 40)}.{rng.randint(0, 9)}"},
        "userAgent": _user_agent(rng),
        "session": {
            "id": f"s-{rng.getrandbits(64):016x}",
            "attribution": {
                "utm": {
                    "campaign": {
                        "name": _text(rng, 20, 60),
                        "terms": [
                            {"term": _text(rng, 5, 20), "weight": rng.random()}
                            for _ in range(rng.randint(1, 3))
                        ],
                    },
                    "source": ("newsletter", "search", "partner")[rng.randrange(3)],
                },
                "landing": "https://shop.example/landing?"
                + "&".join(f"k{i}={rng.getrandbits(40):x}" for i in range(rng.randint(4, 9))),
            },
        },
        "experiments": [
            {
                "id": f"exp-{rng.randint(1, 60)}",
                "variant": ("a", "b", "control")[rng.randrange(3)],
                "meta": {"since": _iso(_START_MS - rng.randint(0, 10**9))},
            }
            for _ in range(rng.randint(0, 4))
        ],
        "device": {
            "hardware": {
                "cpu": {"arch": ("arm64", "x86_64")[rng.randrange(2)], "cores": rng.randint(2, 16)},
                "display": {
                    "width": rng.choice((390, 1280, 1920)),
                    "density": rng.choice((1, 2, 3)),
                },
            },
            "id": f"{user:08d}-{rng.getrandbits(32):08x}",
            "model": f"Model {rng.randint(1, 40)}",
            "type": _DEVICE_TYPES[user % len(_DEVICE_TYPES)],
        },
        "locale": ("fr-FR", "de-DE", "en-IN", "pt-BR")[user % 4],
        "ip": f"10.{user % 250}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
    }


def _properties(rng: random.Random, kind: str) -> dict[str, Any]:
    props: dict[str, Any] = {"description": _text(rng, 100, 600)}
    r = rng.random()
    if r < 0.35:
        props["revenue"] = round(rng.uniform(0.5, 900.0), 2)
    elif r < 0.45:
        props["revenue"] = f"{rng.uniform(1.0, 90.0):.2f}"
    elif r < 0.5:
        props["revenue"] = "n/a"
    if rng.random() < 0.85:
        props["value"] = round(rng.lognormvariate(3.0, 1.2), 4)
    props["url"] = f"https://app.example/{kind}/{rng.getrandbits(48):x}?ref=" + "x" * rng.randint(
        20, 120
    )
    props["tags"] = [f"t{rng.randint(0, 99)}" for _ in range(rng.randint(0, 6))]
    return props


def generate_events(n: int, seed: int = 7, span_seconds: int = 86_400) -> list[dict[str, Any]]:
    """``n`` events with ``receivedAt`` spread over ``span_seconds`` from 2024-05-14."""
    if n < 0 or span_seconds <= 0:
        raise ValueError("n must be >= 0 and span_seconds > 0")
    rng = random.Random(seed)
    user_cum = list(accumulate(1.0 / (k + 5) for k in range(20_000)))
    span_ms = span_seconds * 1000
    events: list[dict[str, Any]] = []
    for i in range(n):
        kind = _TYPES[_bisect(_TYPE_CUM, rng.random() * _TYPE_CUM[-1])]
        user = _bisect(user_cum, rng.random() * user_cum[-1])
        received = _START_MS + int((i + rng.random()) * span_ms / n)
        event: dict[str, Any] = {"type": kind}
        if kind == "track":
            event["event"] = _NAMES[_bisect(_NAME_CUM, rng.random() * _NAME_CUM[-1])]
        elif kind in ("page", "screen"):
            event["name"] = _SCREENS[rng.randrange(len(_SCREENS))]
        if kind in ("track", "page", "screen"):
            event["properties"] = _properties(rng, kind)
        else:
            event["traits"] = {"plan": ("free", "pro")[user % 2], "bio": _text(rng, 50, 200)}
        event["context"] = _context(rng, user)
        event["anonymousId"] = f"anon-{user:06d}-{(user * 2654435761) % 2**32:08x}"
        event["messageId"] = f"msg-{rng.getrandbits(96):024x}"
        event["timestamp"] = _iso(received - rng.randint(0, 5000))
        event["receivedAt"] = _iso(received)
        events.append(event)
    return events


def _bisect(cum: list[float] | list[int], x: float) -> int:
    lo, hi = 0, len(cum)
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return min(lo, len(cum) - 1)
