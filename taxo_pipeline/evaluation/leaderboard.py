"""The results table people read first: strict and lenient hF1 per approach, model and variant."""

from __future__ import annotations

import polars as pl

from taxo_pipeline.evaluation.store import METRICS
from taxo_pipeline.warehouse import Warehouse

LEADERBOARD_SQL = f"""
SELECT approach, model, variant,
       max(f1) FILTER (mode = 'strict') AS strict_hf1,
       max(f1) FILTER (mode = 'lenient') AS lenient_hf1,
       max(count) AS products,
       max(latency_p50_ms) AS latency_p50_ms
FROM {METRICS}
WHERE scope = 'hierarchical'
GROUP BY ALL
ORDER BY strict_hf1 DESC, lenient_hf1 DESC
"""


def leaderboard(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.table_exists(METRICS):
        return pl.DataFrame()
    with warehouse.connect(read_only=True) as con:
        return con.sql(LEADERBOARD_SQL).pl()
