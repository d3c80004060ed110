"""Accuracy of APPROX_COUNT_DISTINCT and PERCENTILES against exact answers (docs/accuracy.md).

What this script does and guarantees:

- Everything goes through the public engine: NDJSON batches (at most 1,000,000 lines each, so
  memory stays bounded at 10^7 values) into one filter grouped by ``@.g`` with a one-day
  interval, then one ``Engine.results`` query per calculation and percentile. Each group is an
  independent cell (its own sketch); the values of different groups never overlap.
- APPROX_COUNT_DISTINCT: for every cardinality ``N = 1, 10, ..., 10^max_exp`` and every value
  distribution, each group holds exactly ``N`` distinct values (so the truth is ``N``); the
  error of a group is ``|estimate - N| / N``. Distributions: ``uniform`` (every value once),
  ``zipf`` (every value once plus ``N`` repeats drawn Zipf(1.2) over the values: skewed
  frequencies), ``numbers`` (integers instead of strings).
- PERCENTILES: for every cell size ``n`` (1, 2, 5, 10, 50, 100, 101, 1,000, ..., 10^max_exp)
  and distribution (``uniform`` on [0, 1000), ``zipf`` integers (a = 1.5, many ties),
  ``lognormal`` (mu 0, sigma 2), ``pareto`` (alpha 1.16, the 80/20 tail), ``loguniform`` over 24
  decades, where the sketch folds its lowest bins), the exact answer is numpy's
  ``quantile(values, p)`` (method ``linear``: PERCENTILE_CONT, decision 11) on the same values.
  Value error: ``|estimate - exact| / |exact|``. Rank window: the answer must lie between the
  values at ranks ``h - 0.01 n`` and ``h + 0.01 n`` (``h = p (n - 1)``), widened by the sketch's
  0.5 %; the table counts answers outside it (there must be none).
- Segment-like cells: events of ``segment_gen.py`` (one day) in a per-minute filter grouped by
  type and event name (small cells) and a per-hour filter grouped by type (large cells),
  PERCENTILES of ``properties.value`` (Pareto); every cell's p50 and p99 is compared with numpy
  on that cell's values, and the answers more than 1 % off are counted.
- Distinct-count tail: 200 groups at 10^4 and 10^5 and 20 at 10^6 (``--tail-groups``) give the
  bias, the standard deviation and the fraction of groups above 2 %.
- Deterministic for a given ``--seed``. Prints markdown tables and a summary against the targets
  (distinct error <= 2 % in every group; percentiles within 1 % of numpy wherever the values
  span less than the sketch's range, and never outside the rank window); exits 1 if a target is
  missed.

Usage::

    python benches/accuracy.py                # up to 10^7 (a few minutes)
    python benches/accuracy.py --max-exp 5    # quick run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eventtally import Engine

BATCH_LINES = 1_000_000
PERCENTILES = (0.5, 0.9, 0.99, 0.999)
DISTINCT_TARGET = 0.02
VALUE_TARGET = 0.01
RANK_WINDOW = 0.01
ALPHA = 0.005  # the sketch's relative accuracy, which widens the rank window
QUANTILE_SIZES_SMALL = (1, 2, 5, 10, 50, 100, 101)
GROUP_BUDGET = 2_000_000
"""Values per (distribution, size) across groups: ``groups = clamp(budget // size, 1, 20)``."""

INGEST = {"id": "acc", "name": "accuracy", "schema": "NEWLINE_DELIMITED"}
FILTER = {
    "id": "acc",
    "name": "accuracy",
    "groupingItems": [{"grouping": "@.g", "alias": None}],
    "intervalType": "DAY",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "distinct",
            "calculations": ["APPROX_COUNT_DISTINCT"],
            "calculationField": "@.u",
        },
        {"id": 2, "name": "quantiles", "calculations": ["PERCENTILES"], "calculationField": "@.v"},
    ],
}
NOW = 1_704_067_200.0


def new_engine() -> Engine:
    """An engine whose clock is fixed, so every event lands in one bucket."""
    return Engine(INGEST, [FILTER], clock=lambda: NOW)


def groups_for(size: int, budget: int) -> int:
    """How many independent groups to measure at this size."""
    return max(1, min(20, budget // max(size, 1)))


def ingest_lines(engine: Engine, lines: Iterator[str]) -> None:
    """Ingests NDJSON lines in batches of at most BATCH_LINES."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == BATCH_LINES:
            engine.ingest("\n".join(batch))
            batch.clear()
    if batch:
        engine.ingest("\n".join(batch))


def answers(engine: Engine, query: dict[str, object]) -> dict[int, float]:
    """``{group: value}`` of one query."""
    rows = engine.results({"filterId": "acc", **query})
    return {int(r["groupings"]["@.g"]): r["value"] for r in rows}


# ---------------------------------------------------------------- distinct


def distinct_lines(
    kind: str, n: int, group: int, rng: np.random.Generator, seed: int
) -> Iterator[str]:
    """NDJSON of exactly ``n`` distinct values for one group, in ``kind``'s frequencies."""
    for start in range(0, n, BATCH_LINES):
        ids = np.arange(start, min(n, start + BATCH_LINES))
        rng.shuffle(ids)
        yield from _distinct_encode(kind, ids, group, seed)
    if kind == "zipf":  # n more occurrences with Zipf-skewed frequencies
        for start in range(0, n, BATCH_LINES):
            size = min(BATCH_LINES, n - start)
            ids = (rng.zipf(1.2, size) - 1) % n
            yield from _distinct_encode(kind, ids, group, seed)


def _distinct_encode(kind: str, ids: np.ndarray, group: int, seed: int) -> Iterator[str]:
    if kind == "numbers":
        base = (seed * 1000 + group) * 10**8
        return (f'{{"g":{group},"u":{base + i}}}' for i in ids.tolist())
    return (f'{{"g":{group},"u":"{kind}{seed}-g{group}-u{i}"}}' for i in ids.tolist())


@dataclass
class DistinctRow:
    kind: str
    n: int
    groups: int
    mean_err: float
    max_err: float
    seconds: float


def measure_distinct(kind: str, n: int, seed: int, budget: int) -> DistinctRow:
    """Errors of APPROX_COUNT_DISTINCT over the groups of one (distribution, cardinality)."""
    t0 = time.perf_counter()
    groups = groups_for(n, budget)
    rng = np.random.default_rng([seed, n, len(kind)])
    engine = new_engine()
    for g in range(groups):
        ingest_lines(engine, distinct_lines(kind, n, g, rng, seed))
    est = answers(engine, {"aggregationId": 1, "calculation": "APPROX_COUNT_DISTINCT"})
    assert sorted(est) == list(range(groups)), est
    errors = [abs(est[g] - n) / n for g in range(groups)]
    return DistinctRow(
        kind, n, groups, float(np.mean(errors)), max(errors), time.perf_counter() - t0
    )


def distinct_signed_errors(kind: str, n: int, groups: int, seed: int) -> np.ndarray:
    """``(estimate - n) / n`` for ``groups`` independent groups of ``n`` distinct strings."""
    rng = np.random.default_rng([seed, n, groups])
    engine = new_engine()
    for g in range(groups):
        ingest_lines(engine, distinct_lines(kind, n, g, rng, seed))
    est = answers(engine, {"aggregationId": 1, "calculation": "APPROX_COUNT_DISTINCT"})
    return np.array([(est[g] - n) / n for g in range(groups)])


# ---------------------------------------------------------------- percentiles

Sampler = Callable[[np.random.Generator, int], np.ndarray]
SAMPLERS: dict[str, Sampler] = {
    "uniform [0, 1000)": lambda rng, n: rng.uniform(0.0, 1000.0, n),
    "zipf a=1.5 (integers)": lambda rng, n: rng.zipf(1.5, n).astype(np.float64),
    "lognormal sigma=2": lambda rng, n: rng.lognormal(0.0, 2.0, n),
    "pareto alpha=1.16": lambda rng, n: rng.pareto(1.16, n) + 1.0,
    "log-uniform 1e-12..1e12": lambda rng, n: 10.0 ** rng.uniform(-12.0, 12.0, n),
}


def quantile_lines(values: np.ndarray, group: int) -> Iterator[str]:
    """NDJSON of one group's values; ``repr`` round-trips every float exactly."""
    head = f'{{"g":{group},"v":'
    return (head + r + "}" for r in map(repr, values.tolist()))


def outside_window(sorted_values: np.ndarray, estimate: float, p: float) -> bool:
    """Whether ``estimate`` lies outside the ±1 % rank window of ``p``, widened by 0.5 %."""
    s = sorted_values
    n = len(s)
    h = p * (n - 1)
    lo = float(s[max(0, math.floor(h - RANK_WINDOW * n))])
    hi = float(s[min(n - 1, math.ceil(h + RANK_WINDOW * n))])
    lo -= abs(lo) * ALPHA
    hi += abs(hi) * ALPHA
    slack = 1e-12 * max(abs(lo), abs(hi))
    return not lo - slack <= estimate <= hi + slack


@dataclass
class QuantileRow:
    dist: str
    n: int
    groups: int
    value_err: dict[float, float]
    outside: int
    seconds: float


def measure_quantiles(dist: str, n: int, seed: int, budget: int) -> QuantileRow:
    """Worst value error against numpy, and answers outside the rank window, over the groups of
    one (distribution, n)."""
    t0 = time.perf_counter()
    groups = groups_for(n, budget)
    rng = np.random.default_rng([seed, n, len(dist)])
    engine = new_engine()
    exact_sorted = []
    for g in range(groups):
        values = SAMPLERS[dist](rng, n)
        for start in range(0, n, BATCH_LINES):
            ingest_lines(engine, quantile_lines(values[start : start + BATCH_LINES], g))
        values.sort()
        exact_sorted.append(values)
    value_err: dict[float, float] = {}
    outside = 0
    for p in PERCENTILES:
        est = answers(engine, {"aggregationId": 2, "calculation": "PERCENTILES", "percentile": p})
        rel = []
        for g, s in enumerate(exact_sorted):
            exact = float(np.quantile(s, p))
            rel.append(abs(est[g] - exact) / abs(exact) if exact else abs(est[g]))
            outside += outside_window(s, est[g], p)
        value_err[p] = max(rel)
    return QuantileRow(dist, n, groups, value_err, outside, time.perf_counter() - t0)


@dataclass
class SegmentRow:
    cells_label: str
    p: float
    cells: int
    exact_cells: int
    off: int
    worst: float
    off_large: int


SEGMENT_VIEWS = {
    # label: (interval, grouping paths); per-minute cells are small, per-hour ones large.
    "per minute by type and event": ("MINUTE", ("@.type", "@.event")),
    "per hour by type": ("HOUR", ("@.type",)),
}


def measure_segment(events: int, seed: int) -> list[SegmentRow]:
    """p50/p99 of every cell of Segment-like events against numpy on that cell's values."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from segment_gen import batches, generate_events

    evs = generate_events(events, seed=seed)
    ingest = {
        "id": "seg",
        "schema": "ARRAY_OF_EVENTS",
        "timestamp": {"source": "PROPERTY", "path": "@.receivedAt", "format": "ISO_8601"},
    }
    filters = [
        {
            "id": f"seg{i}",
            "name": label,
            "groupingItems": [{"grouping": g, "alias": g[2:]} for g in paths],
            "intervalType": interval,
            "intervalCount": 1,
            "aggregations": [
                {
                    "id": 1,
                    "name": "value",
                    "calculations": ["PERCENTILES"],
                    "calculationField": "@.properties.value",
                },
            ],
        }
        for i, (label, (interval, paths)) in enumerate(SEGMENT_VIEWS.items())
    ]
    engine = Engine(ingest, filters, clock=lambda: NOW)
    for body in batches(evs, size=300):
        engine.ingest(body)
    out = []
    for i, (label, (interval, paths)) in enumerate(SEGMENT_VIEWS.items()):
        width = 16 if interval == "MINUTE" else 13  # the receivedAt prefix naming the bucket
        cells: dict[tuple[str, ...], list[float]] = {}
        for e in evs:
            v = e.get("properties", {}).get("value")
            if isinstance(v, int | float) and not isinstance(v, bool):
                key = (e["receivedAt"][:width], *(str(e.get(g[2:], "")) for g in paths))
                cells.setdefault(key, []).append(float(v))
        for p in (0.5, 0.99):
            rows = engine.results(
                {"filterId": f"seg{i}", "aggregationId": 1, "calculation": "PERCENTILES",
                 "percentile": p}
            )  # fmt: skip
            off = off_large = exact_cells = 0
            worst = 0.0
            for r in rows:
                key = (r["dt"][:width], *(r["groupings"][g[2:]] for g in paths))
                values = cells[key]
                exact = float(np.quantile(values, p))
                err = abs(r["value"] - exact) / abs(exact) if exact else abs(r["value"])
                worst = max(worst, err)
                exact_cells += len(values) <= 100
                if err > VALUE_TARGET:
                    off += 1
                    off_large += len(values) > 100
            out.append(SegmentRow(label, p, len(rows), exact_cells, off, worst, off_large))
    return out


# ---------------------------------------------------------------- report


def pct(x: float) -> str:
    """A percentage with enough digits to see small errors."""
    if x == 0:
        return "0"
    return f"{100 * x:.3f} %" if x >= 1e-5 else f"{100 * x:.1e} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-exp", type=int, default=7, help="largest size is 10^max_exp")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--budget",
        type=int,
        default=GROUP_BUDGET,
        help="values per (distribution, size) spread over up to 20 groups",
    )
    parser.add_argument(
        "--tail-groups",
        type=int,
        default=200,
        help="groups for the distinct-count tail at 10^4 and 10^5 (10^6: a tenth); 0 skips it",
    )
    parser.add_argument(
        "--segment-events",
        type=int,
        default=200_000,
        help="Segment-like events for the per-minute cell comparison",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"eventtally accuracy, seed {args.seed}, sizes up to 10^{args.max_exp}\n")

    print("### APPROX_COUNT_DISTINCT (relative error per group; target <= 2 %)\n")
    print("| distinct values N | values | groups | mean error | max error |")
    print("|---:|---|---:|---:|---:|")
    worst_distinct = 0.0
    for exp in range(args.max_exp + 1):
        n = 10**exp
        for kind in ("uniform", "zipf", "numbers"):
            if exp == args.max_exp and exp >= 7 and kind != "uniform":
                continue  # the largest size once: it takes most of the run
            r = measure_distinct(kind, n, args.seed, args.budget)
            worst_distinct = max(worst_distinct, r.max_err)
            label = {
                "uniform": "strings, each once",
                "zipf": "strings, Zipf(1.2) repeats",
                "numbers": "integers, each once",
            }[kind]
            print(
                f"| {n:,} | {label} | {r.groups} | {pct(r.mean_err)} | {pct(r.max_err)} |",
                flush=True,
            )

    print(
        "\n### PERCENTILES against numpy on the same values (worst group's relative error; "
        "answers outside the ±1 % rank window)\n"
    )
    head = " | ".join(f"p = {p}" for p in PERCENTILES)
    print(f"| distribution | cell size n | groups | {head} | outside window |")
    print("|---|---:|---:|" + "---:|" * len(PERCENTILES) + "---:|")
    worst_value = 0.0  # distributions within the sketch's range
    worst_folded = 0.0  # log-uniform over 24 decades: beyond it, lowest bins fold
    outside = 0
    sizes = [*QUANTILE_SIZES_SMALL, *(10**e for e in range(3, args.max_exp + 1))]
    for dist in SAMPLERS:
        for n in sizes:
            r = measure_quantiles(dist, n, args.seed, args.budget)
            if dist.startswith("log-uniform"):
                worst_folded = max(worst_folded, *r.value_err.values())
            else:
                worst_value = max(worst_value, *r.value_err.values())
            outside += r.outside
            cells = " | ".join(pct(r.value_err[p]) for p in PERCENTILES)
            print(f"| {dist} | {n:,} | {r.groups} | {cells} | {r.outside} |", flush=True)

    print(
        f"\n### PERCENTILES of Segment-like cells ({args.segment_events:,} events, "
        "one day; values of `properties.value`)\n"
    )
    print("| cells | p | cells | of them <= 100 values (exact) | answers > 1 % off numpy "
          "| worst error |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    segment_off = 0
    for row in measure_segment(args.segment_events, args.seed):
        segment_off += row.off
        print(
            f"| {row.cells_label} | {row.p} | {row.cells:,} | {row.exact_cells:,} | {row.off:,} "
            f"| {pct(row.worst)} |",
            flush=True,
        )

    if args.tail_groups:
        print("\n### APPROX_COUNT_DISTINCT tail: many groups (fraction of groups above 2 %)\n")
        print(
            "| distinct values N | groups | bias (mean signed error) | std deviation "
            "| max error | groups above 2 % |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for exp in (4, 5, 6):
            n = 10**exp
            groups = max(20, args.tail_groups // (10 ** max(0, exp - 5)))
            signed = distinct_signed_errors("tail", n, groups, args.seed)
            worst_distinct = max(worst_distinct, float(np.max(np.abs(signed))))
            above = int(np.sum(np.abs(signed) > DISTINCT_TARGET))
            print(
                f"| {n:,} | {groups} | {100 * float(np.mean(signed)):+.3f} % | "
                f"{100 * float(np.std(signed)):.3f} % | {pct(float(np.max(np.abs(signed))))} | "
                f"{above} ({100 * above / groups:.1f} %) |",
                flush=True,
            )

    ok_distinct = worst_distinct <= DISTINCT_TARGET
    ok_value = worst_value <= VALUE_TARGET and segment_off == 0
    ok_window = outside == 0
    print("\n### Summary\n")
    print(
        f"- worst distinct-count error in any group: {pct(worst_distinct)} "
        f"(target <= 2 %): {'met' if ok_distinct else 'MISSED'}"
    )
    print(
        f"- worst percentile error against numpy (values within the sketch's range): "
        f"{pct(worst_value)}; Segment-like answers more than 1 % off: {segment_off} "
        f"(target <= 1 %): {'met' if ok_value else 'MISSED'}"
    )
    print(
        f"- percentile answers outside the ±1 % rank window: {outside} (target 0): "
        f"{'met' if ok_window else 'MISSED'}"
    )
    print(
        f"- worst percentile error on log-uniform values over 24 decades (lowest bins fold): "
        f"{pct(worst_folded)}"
    )
    print(f"- run time: {time.perf_counter() - started:.0f} s")
    return 0 if ok_distinct and ok_value and ok_window else 1


if __name__ == "__main__":
    sys.exit(main())
