"""The load benchmark's own arithmetic (``benches/load_fronts.py``), which needs no server.

``--rounds N`` reports each throughput figure's median over interleaved rounds; these tests pin
what the table then shows: medians per connection count, refusals summed, every round's rate.
"""

from __future__ import annotations

import tests.support  # noqa: F401  (puts benches/ on sys.path)
from load_fronts import median_throughput


def _run(rps: float, p99_us: float, non2xx: int = 0) -> dict[str, float]:
    return {"rps": rps, "p50_us": p99_us / 2, "p99_us": p99_us, "non2xx": non2xx,
            "cpu_user_ms": 0.6, "cpu_sys_ms": 0.4, "requests": rps * 6, "errors": 0}  # fmt: skip


def test_medians_per_connection_count_with_refusals_summed() -> None:
    rounds = [
        {"c16": _run(1200, 30_000), "c64": _run(1300, 90_000, non2xx=1)},
        {"c16": _run(1500, 20_000), "c64": _run(1100, 80_000)},
        {"c16": _run(1300, 25_000, non2xx=2), "c64": _run(1250, 70_000)},
    ]
    merged = median_throughput(rounds)
    assert merged["c16"]["rps"] == 1300
    assert merged["c16"]["p99_us"] == 25_000
    assert merged["c64"]["rps"] == 1250
    assert merged["c64"]["p99_us"] == 80_000
    assert merged["c16"]["non2xx"] == 2
    assert merged["c64"]["non2xx"] == 1
    assert merged["c16"]["rounds_rps"] == [1200, 1500, 1300]


def test_an_even_number_of_rounds_takes_the_mean_of_the_middle_two() -> None:
    rounds = [{"c16": _run(r, 10_000)} for r in (1000, 1400, 1200, 1300)]
    assert median_throughput(rounds)["c16"]["rps"] == 1250


def test_one_round_is_that_round() -> None:
    run = _run(1234, 12_000, non2xx=3)
    merged = median_throughput([{"c16": run}])["c16"]
    assert {k: merged[k] for k in run} == run
    assert merged["rounds_rps"] == [1234]
