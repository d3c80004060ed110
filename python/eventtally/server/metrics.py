"""Prometheus metrics in the text exposition format (version 0.0.4), standard library only.

Guarantees:
- :meth:`Registry.render` returns text that Prometheus (and ``prometheus_client.parser``) parses:
  one ``# HELP`` and ``# TYPE`` line per family, label values escaped (``\\``, ``"``, newline),
  histograms as cumulative ``_bucket{le=...}`` series ending in ``+Inf`` plus ``_sum`` and
  ``_count``, counters named ``..._total``.
- Counters and histograms are thread-safe and cheap (one lock, O(labels) per update); values
  computed at scrape time (state sizes, WAL counters, snapshot ages) come from collector
  callbacks, so the request path never pays for them.
- The metric names and labels are listed in ``docs/server.md`` ("Operations").
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "Counter",
    "Family",
    "Histogram",
    "Registry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Request latency buckets (seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels) + "}"


@dataclass
class Family:
    """One metric family with its samples: ``(suffix, labels, value)``; the sample's name is
    the family name plus the suffix (``""``, ``"_bucket"``, ``"_sum"``, ``"_count"``)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels = (), suffix: str = "") -> Family:
        self.samples.append((suffix, labels, value))
        return self

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for suffix, labels, value in self.samples:
            out.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")


def histogram_family(
    name: str,
    help: str,
    buckets: Iterable[tuple[float, int]],
    total: float,
    count: int,
    labels: Labels = (),
) -> Family:
    """A histogram family from cumulative ``(upper bound, count)`` pairs ending with ``inf``."""
    fam = Family(name, "histogram", help)
    for bound, cumulative in buckets:
        le = "+Inf" if math.isinf(bound) else repr(float(bound))
        fam.add(cumulative, (*labels, ("le", le)), "_bucket")
    fam.add(total, labels, "_sum")
    fam.add(count, labels, "_count")
    return fam


class Counter:
    """A monotonically increasing value per label set."""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError("counter names end with _total")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def family(self) -> Family:
        fam = Family(self.name, "counter", self.help)
        with self._lock:
            items = sorted(self._values.items())
        for values, v in items:
            fam.add(v, tuple(zip(self.labelnames, values, strict=True)))
        return fam


class Histogram:
    """Observations counted into fixed buckets (seconds by default)."""

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def family(self) -> Family:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return histogram_family(self.name, self.help, cumulative, total, running)


Collector = Callable[[], Iterable[Family]]


class Registry:
    """Counters and histograms registered once, plus collectors called at every scrape."""

    def __init__(self) -> None:
        self._metrics: list[Counter | Histogram] = []
        self._collectors: list[Collector] = []

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        c = Counter(name, help, labelnames)
        self._metrics.append(c)
        return c

    def histogram(
        self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        h = Histogram(name, help, buckets)
        self._metrics.append(h)
        return h

    def collector(self, fn: Collector) -> None:
        self._collectors.append(fn)

    def families(self) -> list[Family]:
        out = [m.family() for m in self._metrics]
        for fn in self._collectors:
            out.extend(fn())
        return out

    def render(self) -> bytes:
        """The whole exposition, ``\\n``-terminated."""
        lines: list[str] = []
        for fam in self.families():
            fam.render(lines)
        return ("\n".join(lines) + "\n").encode()
