"""The results table people read first: the `leaderboard` view, L3 approaches by hF1, then NLI by L1 F1."""

from __future__ import annotations

import polars as pl

from taxo_pipeline.warehouse import Warehouse


def leaderboard(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.table_exists("leaderboard"):
        return pl.DataFrame()
    with warehouse.connect(read_only=True) as con:
        return con.sql("SELECT * FROM leaderboard").pl()
