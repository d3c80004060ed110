"""Second-shaped events for the scanner benchmarks (issue 13): the same Segment events, laid out
differently, so a scanner tuned to one field order or one string length shows it.

What this module guarantees:

- Determinism: :func:`reshape` is a pure function of its input events (no randomness), so
  ``reshape(generate_events(n, seed))`` is reproducible byte for byte.
- The answer of ``BENCH_FILTER`` does not change: every path it reads (``type``, ``event``,
  ``name``, ``context.device.type``, ``receivedAt``, ``properties.revenue``,
  ``properties.value``, ``anonymousId``) keeps its value. Only what the filter does not read is
  moved or added, which is what the scanner has to skip:
  - members in reverse order at every level (the read paths come last, not first);
  - ``context`` one level deeper per event, four levels of ``context.traits`` objects holding
    arrays and numbers of every JSON form, and literals;
  - longer strings: ``userAgent`` three times over, a 200-byte ``context.page.search`` with
    escapes (``\\"``, ``\\\\``, ``\\u00e9``) and non-ASCII text.

CLI::

    python benches/reshape_events.py --events 20000 --format array --out reshaped.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from segment_gen import encode_array, encode_ndjson, generate_events

__all__ = ["reshape"]


def _reverse(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse(v) for v in value]
    return value


def _traits(i: int) -> dict[str, Any]:
    inner: dict[str, Any] = {
        "scores": [i % 97, -(i % 13) * 1.5, 2.5e-3, 1e10, 0, -0.0],
        "flags": [True, False, None],
        "note": "plain text with no escapes at all, long enough to cross vector lanes",
    }
    for depth in range(4):
        inner = {f"level{depth}": inner, "n": depth * 1000 + i % 1000, "ok": depth % 2 == 0}
    return inner


def reshape(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of ``events`` in the second shape (see the module doc)."""
    out = []
    for i, event in enumerate(events):
        e = json.loads(json.dumps(event))
        ctx = e.get("context", {})
        if "userAgent" in ctx:
            ctx["userAgent"] = " ".join([ctx["userAgent"]] * 3)
        page = ctx.get("page")
        if isinstance(page, dict):
            page["search"] = '?q=caf\u00e9 \\"quoted\\" path\\\\x ' + "\u00fcber-" * 30
        ctx["traits"] = _traits(i)
        ctx["wrapper"] = {"inner": {"kept": ["a", {"b": [1, 2, {"c": None}]}], "id": i}}
        out.append(_reverse(e))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", choices=["ndjson", "array"], default="array")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    events = reshape(generate_events(args.events, seed=args.seed))
    data = encode_array(events) if args.format == "array" else encode_ndjson(events)
    with open(args.out, "wb") as fh:
        fh.write(data)
    print(
        f"wrote {len(events)} events ({len(data)} bytes, {args.format}); "
        f"average event size {len(data) // max(len(events), 1)} bytes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
