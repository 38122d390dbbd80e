"""SQL views over the result tables: the questions people ask of the warehouse, answered in one query.

The leaderboard, metrics_by_level, product_predictions, confusions and precision_at_coverage read the
published copies of the results (publication.py): a rerun's metrics and predictions show there together,
once it is whole. latencies reads the working table: every request measured, a rerun's included.
The catalogue runs' views are classifications.py's."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from taxo_pipeline.warehouse.calibrations import HELD_OUT
from taxo_pipeline.warehouse.publication import Live, current_dataset, publish, source
from taxo_pipeline.warehouse.results import METRICS
from taxo_pipeline.warehouse.store import Warehouse

MODELS_TABLE = "models"
# The taxonomy depth of the latest results: the experiment table's (TAXO_DEPTH), which products_experiment holds.
CURRENT_DEPTH = "(SELECT depth FROM datasets ORDER BY recorded_at DESC LIMIT 1)"
COVERAGE_VIEW = "precision_at_coverage"


def leaderboard_sql(metrics: str, dataset: str) -> str:
    """The reference's two results tables in one, from `metrics` (the published copy) on `dataset` (SQL):
    path rows rank by hierarchical F1 (the task names the taxonomy depth: L3, full-depth, L5 ...), L1-only
    rows (NLI) by L1 macro F1."""
    return f"""
        SELECT CASE WHEN m.scope <> 'hierarchical' THEN 'L1 classification (L1 F1)'
                    WHEN m.depth = 'full' THEN 'full-depth classification (hF1)'
                    ELSE 'L' || m.depth || ' classification (hF1)' END AS task,
               m.approach, m.model || coalesce(' + ' || m.reranker, '') AS model,
               coalesce(r.size, s.size) AS model_size,
               max(m.f1) FILTER (m.mode = 'strict') AS strict, max(m.f1) FILTER (m.mode = 'lenient') AS lenient,
               m.variant, max(m.count) AS products, max(m.latency_p50_ms) AS latency_p50_ms,
               max(m.latency_per_product_ms) AS latency_per_product_ms,
               max(m.evaluation) AS evaluation, m.dataset, m.depth
        FROM {metrics} m
        LEFT JOIN models s ON s.id = m.model
        LEFT JOIN models r ON r.id = m.reranker  -- reranking rows: the reranker's size
        WHERE m.headline AND m.dataset = {dataset}
        GROUP BY ALL
        ORDER BY task DESC, strict DESC, lenient DESC, approach, model, variant  -- ties in a stable order
    """


# The views of the working tables.
VIEWS = {
    # Deeper taxonomies have a macro figure per level: macro_f1_by_level lists them all, L1 first.
    "metrics_by_level": """
        SELECT approach, model, reranker, variant, dataset, mode,
               max(f1) FILTER (scope = 'hierarchical') AS hierarchical_f1,
               max(f1) FILTER (scope = 'macro_l1') AS macro_l1_f1,
               max(f1) FILTER (scope = 'macro_l2') AS macro_l2_f1,
               max(f1) FILTER (scope = 'macro_l3') AS macro_l3_f1,
               max(count) AS products, max(evaluation) AS evaluation, depth,
               list(f1 ORDER BY CAST(substr(scope, 8) AS INTEGER)) FILTER (scope LIKE 'macro_l%') AS macro_f1_by_level
        FROM {metrics} GROUP BY ALL ORDER BY ALL
    """,
    "latencies": """
        SELECT approach, model, reranker, variant, dataset, stage, count(*) AS requests, max(batch_size) AS batch_size,
               quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms
        FROM request_latencies GROUP BY ALL ORDER BY ALL
    """,
    # Only results at the evaluation table's depth: another depth's labels would be compared with these.
    "product_predictions": f"""
        SELECT p.approach, p.model, p.reranker, p.variant, p.dataset, p.product_id, e.product_title,
               e.product_description, p.category AS prediction, p.score, e.ground_truth_category,
               p.category = e.ground_truth_category AS correct_strict,
               p.category = e.ground_truth_category OR list_contains(e.potential_product_categories, p.category)
                   AS correct_lenient
        FROM {{predictions}} p JOIN products_experiment e USING (product_id) LEFT JOIN datasets d USING (dataset)
        WHERE p.rank = 1 AND coalesce(d.depth, '3') = {CURRENT_DEPTH}
    """,
    # Most frequent wrong top-level and second-level calls per approach: where a model gets lost.
    "confusions": """
        WITH levels AS (
            SELECT approach, model, reranker, variant, dataset, k AS level,
                   array_to_string(string_split(ground_truth_category, ' > ')[1:k], ' > ') AS truth,
                   array_to_string(string_split(prediction, ' > ')[1:k], ' > ') AS predicted
            FROM product_predictions, (VALUES (1), (2)) AS t(k)
            WHERE len(string_split(ground_truth_category, ' > ')) >= k
        )
        SELECT approach, model, reranker, variant, dataset, level, truth, predicted, count(*) AS products
        FROM levels WHERE truth <> predicted
        GROUP BY ALL ORDER BY approach, model, reranker NULLS FIRST, variant, dataset, level, products DESC
    """,
}


def coverage_sql(held_out: str) -> str:
    """precision_at_coverage over `held_out` (the published copy of heldout_confidences): for each threshold
    (every held-out confidence), the products at or above it and their precision at L1, L2 and the exact
    path (classification/coverage.py computes the same for one key)."""
    return f"""
    WITH accepted AS (
        SELECT approach, model, reranker, variant, dataset, confidence AS threshold,
               count(*) OVER above AS products, count(*) OVER key AS labelled,
               avg(correct_l1::DOUBLE) OVER above AS precision_l1, avg(correct_l2::DOUBLE) OVER above AS precision_l2,
               avg(correct_exact::DOUBLE) OVER above AS precision_exact
        FROM {held_out}
        WINDOW key AS (PARTITION BY approach, model, reranker, variant, dataset),
               above AS (key ORDER BY confidence DESC RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
    SELECT DISTINCT approach, model, reranker, variant, dataset, threshold, products,
           products / labelled AS coverage, precision_l1, precision_l2, precision_exact
    FROM accepted
    ORDER BY approach, model, reranker NULLS FIRST, variant, dataset, threshold DESC
"""


def _bound(sql: str, tables: dict[str, str]) -> str:
    """`sql` reading `tables` ({placeholder: table}): the published copies once results were published."""
    for placeholder, table in tables.items():
        sql = sql.replace(f"{{{placeholder}}}", table)
    return sql


def refresh_views(warehouse: Warehouse, models: pa.Table, live: Live) -> bool:
    """Replace the `models` table (id, family, size, enabled), publish the results if they are whole
    (publication.py) and (re)create every view, in one transaction: the one step after a result is
    written, so a rerun shows as soon as its last partition is done. Views need the result tables; they
    are created once those exist. Returns whether the results were published."""
    with warehouse.transaction() as con:
        con.register("_models", models)
        con.execute(f"CREATE OR REPLACE TABLE {MODELS_TABLE} AS SELECT * FROM _models")
        existing = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        published = publish(con, live)
        if {"metrics", "predictions", "request_latencies", "datasets", "products_experiment"} <= existing:
            # bound now: until the first publication (an older warehouse) the working table
            if metrics := source(con, METRICS):
                con.execute(f"CREATE OR REPLACE VIEW leaderboard AS {leaderboard_sql(metrics, current_dataset(con))}")
            tables = {table: source(con, table) or table for table in (METRICS, "predictions")}
            for name, sql in VIEWS.items():
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {_bound(sql, tables)}")
        if held_out := source(con, HELD_OUT):
            con.execute(f"CREATE OR REPLACE VIEW {COVERAGE_VIEW} AS {coverage_sql(held_out)}")
    return published


def leaderboard(warehouse: Warehouse) -> pl.DataFrame:
    """The `leaderboard` view's rows (none before the first results)."""
    if not warehouse.table_exists("leaderboard"):
        return pl.DataFrame()
    with warehouse.connect(read_only=True) as con:
        return con.sql("SELECT * FROM leaderboard").pl()
