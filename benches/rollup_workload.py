"""The SEG-ROLLUP workload's queries: eventtally's Metrics API queries and the same in DuckDB SQL.

Guarantees: one definition, read by ``run_ingest.py`` and ``run_vs_duckdb.py``; it imports nothing
but the standard library and ``segment_gen`` (itself standard library only), so a timed child
process that loads it pays for neither eventtally, numpy nor the reference.
"""

from __future__ import annotations

from typing import Any

from segment_gen import BENCH_FILTER

__all__ = ["DUCKDB_SQL", "QUERIES"]


def _query(aggregation_id: int, calculation: str, **extra: Any) -> dict[str, Any]:
    return {
        "filterId": BENCH_FILTER["id"],
        "aggregationId": aggregation_id,
        "calculation": calculation,
        **extra,
    }


QUERIES: dict[str, dict[str, Any]] = {
    "count": _query(1, "COUNT"),
    "sum": _query(2, "SUM"),
    "min": _query(2, "MIN"),
    "max": _query(2, "MAX"),
    "avg": _query(2, "AVG"),
    "distinct": _query(3, "APPROX_COUNT_DISTINCT"),
    "p50": _query(4, "PERCENTILES", percentile=0.5),
}


DUCKDB_SQL = """
SELECT
    date_trunc('minute', receivedAt) AS minute,
    type, event, name, context.device.type AS device,
    count(*) AS count,
    sum(TRY_CAST(properties.revenue AS DOUBLE)) AS sum,
    min(TRY_CAST(properties.revenue AS DOUBLE)) AS min,
    max(TRY_CAST(properties.revenue AS DOUBLE)) AS max,
    avg(TRY_CAST(properties.revenue AS DOUBLE)) AS avg,
    approx_count_distinct(anonymousId) AS distinct,
    approx_quantile(properties.value, 0.5) AS p50
FROM read_ndjson(?, columns = {
    'type': 'VARCHAR', 'event': 'VARCHAR', 'name': 'VARCHAR',
    'receivedAt': 'TIMESTAMP', 'anonymousId': 'VARCHAR',
    'properties': 'STRUCT(revenue VARCHAR, value DOUBLE)',
    'context': 'STRUCT(device STRUCT(type VARCHAR))'
})
WHERE type IN ('track', 'page', 'screen')
GROUP BY ALL
"""
"""The workload in DuckDB SQL. ``revenue`` is read as text and ``TRY_CAST`` to DOUBLE, so a
numeric string counts and anything else is skipped, as eventtally's decision 6 says."""
