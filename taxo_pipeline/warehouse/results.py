"""Predictions, request latencies, metrics and the datasets they were computed on, keyed by ResultKey.

Every approach writes the same tables, so one SQL query compares them all. A result's rows are
replaced in one transaction: a failure leaves the previous ones in place. evaluation/store.py builds
the rows; calibrations.py holds the calibrations, publication.py the copies readers see.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from taxo_pipeline.dataset.taxonomy import Depth, parse_depth
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.warehouse.publication import PUBLISHED, current_dataset, forget, record, source
from taxo_pipeline.warehouse.store import Warehouse, has_table, matching, replace_rows

PREDICTIONS = "predictions"
LATENCIES = "request_latencies"
METRICS = "metrics"
DATASETS = "datasets"
RESULT_TABLES = (PREDICTIONS, LATENCIES, METRICS)
FULL = "full"  # a dataset's scope: the whole evaluation table, or a subset (--limit)
DEPTH = "depth"  # the taxonomy depth (TAXO_DEPTH) a dataset's labels, and so its results, are trimmed to


def write_results(
    warehouse: Warehouse, key: ResultKey, predictions: pa.Table, latencies: pa.Table, dataset: pa.Table,
    settings: pa.Table,
) -> None:  # fmt: skip
    """Replace the key's predictions and request latencies, its dataset's row and its settings row
    (publication.settings_rows), in one transaction; its previous metrics go too (they described other
    predictions)."""
    with warehouse.transaction() as con:
        replace_rows(con, PREDICTIONS, key.columns, predictions)
        replace_rows(con, LATENCIES, key.columns, latencies)
        replace_rows(con, DATASETS, {"dataset": key.dataset}, dataset)
        _delete(con, METRICS, key)
        record(con, settings)


def dataset_depth(warehouse: Warehouse, dataset: str) -> Depth:
    """The taxonomy depth the dataset's labels were trimmed to, as its results were stored."""
    with warehouse.connect(read_only=True) as con:
        found = con.execute(f"SELECT {DEPTH} FROM {DATASETS} WHERE dataset = ?", [dataset]).fetchall()
    if not found:
        raise LookupError(f"dataset {dataset} is not in the warehouse's {DATASETS} table: classify it first")
    return parse_depth(found[0][0])


def _delete(con, table: str, key: ResultKey) -> None:
    if has_table(con, table):
        condition, params = matching(key.columns)
        con.execute(f"DELETE FROM {table} WHERE {condition}", params)


def clear_results(warehouse: Warehouse, key: ResultKey) -> None:
    """Forget a key's results on every dataset, e.g. when the approach does not apply to the model
    (image retrieval on a text model): its calibration and published rows too, since a published key
    that never comes back would keep every later rerun from being published."""
    condition, params = matching({c: v for c, v in key.columns.items() if c != "dataset"})
    with warehouse.transaction() as con:
        existing = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in {*RESULT_TABLES, *PUBLISHED} & existing:
            con.execute(f"DELETE FROM {table} WHERE {condition}", params)
        forget(con, condition, params)


def stage_latencies(warehouse: Warehouse, key: ResultKey, stage: str) -> list[tuple[float, int]]:
    """(latency_ms, batch_size) of each of the key's requests in `stage`."""
    if not warehouse.table_exists(LATENCIES):
        return []
    condition, params = matching(key.columns)
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            f"SELECT latency_ms, batch_size FROM {LATENCIES} WHERE {condition} AND stage = ?", [*params, stage]
        ).fetchall()


def latency_per_product(warehouse: Warehouse, key: ResultKey, products: int) -> float | None:
    """Milliseconds of SIE requests per product classified, over every stage the approach called
    (the category index is built once per model, not per product)."""
    condition, params = matching(key.columns)
    with warehouse.connect(read_only=True) as con:
        (total,) = con.execute(
            f"SELECT sum(latency_ms) FROM {LATENCIES} WHERE {condition} AND stage <> 'category_encode'", params
        ).fetchone()
    return total / products if total is not None and products else None


def top1_with_truth(warehouse: Warehouse, key: ResultKey) -> pl.DataFrame:
    """Each predicted product's top category next to its ground truth and potentials."""
    condition, params = matching(key.columns, "p")
    with warehouse.connect(read_only=True) as con:
        return con.sql(
            f"""
            SELECT p.product_id, p.category AS prediction, e.ground_truth_category, e.potential_product_categories
            FROM {PREDICTIONS} p JOIN products_experiment e USING (product_id)
            WHERE {condition} AND p.rank = 1
            ORDER BY p.product_id
            """,
            params=params,
        ).pl()


def ranked_with_truth(warehouse: Warehouse, key: ResultKey) -> list[tuple[str, list[tuple[str, float]], str]]:
    """(product id, its stored top-k as (category, score) best first, its ground truth) of every product
    the key predicted on the evaluation table, by product id."""
    condition, params = matching(key.columns, "p")
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            f"""SELECT p.product_id, list((p.category, p.score) ORDER BY p.rank), max(e.ground_truth_category)
                FROM {PREDICTIONS} p JOIN products_experiment e USING (product_id)
                WHERE {condition}
                GROUP BY p.product_id ORDER BY p.product_id""",
            params,
        ).fetchall()
    return [(product, [tuple(c) for c in ranked], truth) for product, ranked, truth in rows]


def write_metrics(warehouse: Warehouse, key: ResultKey, rows: pa.Table) -> None:
    with warehouse.transaction() as con:
        replace_rows(con, METRICS, key.columns, rows)


def metric_rows(warehouse: Warehouse, key: ResultKey) -> list[tuple[str, str, float, float, float, int]]:
    """(mode, scope, precision, recall, f1, count) of the key's stored metrics."""
    condition, params = matching(key.columns)
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            f"SELECT mode, scope, precision, recall, f1, count FROM {METRICS} WHERE {condition}", params
        ).fetchall()


def headline_f1(warehouse: Warehouse, model: str, dataset: str) -> pl.DataFrame:
    """Strict and lenient headline F1 of every approach stored for `model` (and its reranking pairs,
    where it retrieves) on `dataset`, best first."""
    with warehouse.connect(read_only=True) as con:
        return con.sql(
            f"""
            SELECT approach, reranker, variant, scope,
                   max(f1) FILTER (mode = 'strict') AS strict, max(f1) FILTER (mode = 'lenient') AS lenient
            FROM {METRICS} WHERE model = ? AND dataset = ? AND headline
            GROUP BY ALL ORDER BY strict DESC, approach, reranker NULLS FIRST, variant
            """,
            params=[model, dataset],
        ).pl()


def published_scores(warehouse: Warehouse) -> list[tuple[str, str, str, str | None, str, float]]:
    """(approach, model, variant, reranker, dataset, strict hF1) of every published path result on the
    current full dataset, best first."""
    with warehouse.connect(read_only=True) as con:
        if (metrics := source(con, METRICS)) is None:
            return []
        return con.execute(
            f"""SELECT approach, model, variant, reranker, dataset, f1 FROM {metrics}
                WHERE headline AND scope = 'hierarchical' AND mode = 'strict' AND dataset = {current_dataset(con)}
                ORDER BY f1 DESC, approach, model, variant"""
        ).fetchall()
