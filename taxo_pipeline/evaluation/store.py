"""Predictions, request latencies and metrics in the warehouse, keyed by ResultKey.

Every approach writes the same three tables, so one SQL query compares them all. A result's rows are
replaced in one transaction: a failure leaves the previous ones in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, Depth, depth_label, parse_depth
from taxo_pipeline.evaluation.keys import ResultKey, where
from taxo_pipeline.evaluation.metrics import latency_summary
from taxo_pipeline.evaluation.publication import PUBLISHED, forget, record, settings_rows
from taxo_pipeline.evaluation.tables import metric_rows
from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.warehouse import Warehouse, replace_rows

PREDICTIONS = "predictions"
LATENCIES = "request_latencies"
METRICS = "metrics"
DATASETS = "datasets"
RESULT_TABLES = (PREDICTIONS, LATENCIES, METRICS)
FULL = "full"  # a dataset's scope: the whole evaluation table, or a subset (--limit)
DEPTH = "depth"  # the taxonomy depth (TAXO_DEPTH) a dataset's labels, and so its results, are trimmed to

KEY_SCHEMA = [("approach", pa.string()), ("model", pa.string()), ("reranker", pa.string()), ("variant", pa.string()),
              ("dataset", pa.string())]  # fmt: skip


def _key_columns(key: ResultKey, rows: int) -> dict[str, pa.Array]:
    return {name: pa.array([key.columns[name]] * rows, type_) for name, type_ in KEY_SCHEMA}


def prediction_rows(key: ResultKey, product_ids: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]) -> pa.Table:
    """`ranked[i]` is product i's candidates, best first, as (category path, score: higher is better)."""
    ids, ranks, categories, scores = [], [], [], []
    for product_id, candidates in zip(product_ids, ranked, strict=True):
        for rank, (category, score) in enumerate(candidates, start=1):
            ids.append(product_id), ranks.append(rank), categories.append(category), scores.append(float(score))
    return pa.table(
        {
            **_key_columns(key, len(ids)),
            "product_id": pa.array(ids, pa.string()),
            "rank": pa.array(ranks, pa.int32()),
            "category": pa.array(categories, pa.string()),
            "score": pa.array(scores, pa.float64()),
            "computed_at": pa.array([datetime.now(UTC)] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def latency_rows(key: ResultKey, requests: Mapping[str, Sequence[LatencyRecord]]) -> pa.Table:
    records = [(stage, r) for stage, stage_requests in requests.items() for r in stage_requests]
    return pa.table(
        {
            **_key_columns(key, len(records)),
            "stage": pa.array([stage for stage, _ in records], pa.string()),
            "operation": pa.array([r.operation for _, r in records], pa.string()),
            "batch_size": pa.array([r.batch_size for _, r in records], pa.int32()),
            "latency_ms": pa.array([r.latency_ms for _, r in records], pa.float64()),
            "recorded_at": pa.array([datetime.now(UTC)] * len(records), pa.timestamp("us", tz="UTC")),
        }
    )


def add_depth_column(con, table: str) -> None:
    """Inside the caller's transaction: give an older warehouse's `table` its depth column; every row
    written before the depth was a setting is depth 3, the column's default."""
    # fetchall: a result left unfinished blocks the caller's next register() on this connection
    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]:
        con.execute(f"ALTER TABLE \"{table}\" ADD COLUMN IF NOT EXISTS {DEPTH} VARCHAR DEFAULT '{MAX_LEVEL}'")


def save_results(
    warehouse: Warehouse,
    key: ResultKey,
    product_ids: Sequence[str],
    ranked: Sequence[Sequence[tuple[str, float]]],
    requests: Mapping[str, Sequence[LatencyRecord]],
    products: int,
    scope: str,
    depth: Depth = MAX_LEVEL,
    *,
    model_fingerprint: str,
) -> int:
    """The key's predictions and request latencies, the dataset it covers (with the taxonomy depth of
    its labels) and the fingerprint of the model settings they were computed with
    (publication.settings_fingerprint), in one transaction; its previous metrics go too (they described
    other predictions). Readers keep the published copies until the rerun is whole (publication.py).
    Returns the prediction rows."""
    rows = prediction_rows(key, product_ids, ranked)
    dataset = pa.table({"dataset": [key.dataset], "products": pa.array([products], pa.int64()), "scope": [scope],
                        "recorded_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
                        DEPTH: [depth_label(depth)]})  # fmt: skip
    with warehouse.transaction() as con:
        replace_rows(con, PREDICTIONS, key.columns, rows)
        replace_rows(con, LATENCIES, key.columns, latency_rows(key, requests))
        add_depth_column(con, DATASETS)
        replace_rows(con, DATASETS, {"dataset": key.dataset}, dataset)
        _delete(con, METRICS, key)
        record(con, settings_rows([tuple(key.columns.values())], [model_fingerprint]))
    return rows.num_rows


def dataset_depth(warehouse: Warehouse, dataset: str) -> Depth:
    """The taxonomy depth the dataset's labels were trimmed to (save_results recorded it; a warehouse from
    before the setting holds depth-3 datasets only)."""
    with warehouse.connect(read_only=True) as con:
        recorded = con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?", [DATASETS, DEPTH]
        ).fetchone()[0]
        column = DEPTH if recorded else f"'{MAX_LEVEL}'"
        found = con.execute(f"SELECT {column} FROM {DATASETS} WHERE dataset = ?", [dataset]).fetchone()
    if found is None:
        raise LookupError(f"dataset {dataset} is not in the warehouse's {DATASETS} table: classify it first")
    return parse_depth(found[0])


def _delete(con, table: str, key: ResultKey) -> None:
    # fetchall: a result left unfinished blocks the caller's next register() on this connection
    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]:
        condition, params = where(key)
        con.execute(f"DELETE FROM {table} WHERE {condition}", params)


def clear_results(warehouse: Warehouse, key: ResultKey) -> None:
    """Forget a key's results on every dataset, e.g. when the approach does not apply to the model
    (image retrieval on a text model): its calibration and published rows too, since a published key
    that never comes back would keep every later rerun from being published."""
    columns = [c for c in key.columns if c != "dataset"]
    condition = " AND ".join(f'"{c}" IS NOT DISTINCT FROM ?' for c in columns)
    params = [key.columns[c] for c in columns]
    with warehouse.transaction() as con:
        existing = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in {*RESULT_TABLES, *PUBLISHED} & existing:
            con.execute(f"DELETE FROM {table} WHERE {condition}", params)
        forget(con, condition, params)


def latency(warehouse: Warehouse, key: ResultKey, stage: str) -> dict:
    """The reference's latency block {p50, p95, request_count, batch_size} for one stage; the
    batch size is the largest request's, i.e. the configured one."""
    rows = []
    if warehouse.table_exists(LATENCIES):
        condition, params = where(key)
        with warehouse.connect(read_only=True) as con:
            rows = con.execute(
                f"SELECT latency_ms, batch_size FROM {LATENCIES} WHERE {condition} AND stage = ?", [*params, stage]
            ).fetchall()
    return latency_summary([r[0] for r in rows], max((r[1] for r in rows), default=0))


def latency_per_product(warehouse: Warehouse, key: ResultKey, products: int) -> float | None:
    """Milliseconds of SIE requests per product classified, over every stage the approach called
    (the category index is built once per model, not per product)."""
    condition, params = where(key)
    with warehouse.connect(read_only=True) as con:
        (total,) = con.execute(
            f"SELECT sum(latency_ms) FROM {LATENCIES} WHERE {condition} AND stage <> 'category_encode'", params
        ).fetchone()
    return total / products if total is not None and products else None


def top1_with_truth(warehouse: Warehouse, key: ResultKey) -> pl.DataFrame:
    """Each predicted product's top category next to its ground truth and potentials."""
    condition, params = where(key, "p")
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


def save_metrics(
    warehouse: Warehouse, key: ResultKey, result: dict, count: int, latency_block: dict, evaluation: str, headline: str,
    depth: Depth = MAX_LEVEL,
) -> pa.Table:
    rows = metric_rows(
        result, key, count=count, latency=latency_block if latency_block["request_count"] else None,
        evaluation=evaluation, headline=headline,
    )  # fmt: skip
    rows = rows.append_column(DEPTH, pa.array([depth_label(depth)] * rows.num_rows, pa.string()))
    with warehouse.transaction() as con:
        add_depth_column(con, METRICS)
        replace_rows(con, METRICS, key.columns, rows)
    return rows


def load_metrics(warehouse: Warehouse, key: ResultKey) -> tuple[dict, int]:
    """The strict/lenient blocks as the reference nests them, rebuilt from the long rows: for path
    approaches {hierarchical, macro: {l1, l2, l3}} (one per level at other depths), for L1-only approaches (NLI) the L1 P/R/F1 itself."""
    condition, params = where(key)
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(f"SELECT mode, scope, precision, recall, f1, count FROM {METRICS} WHERE {condition}", params).fetchall()
    if not rows:
        raise LookupError(f"no metrics in the warehouse for {key}")
    scopes: dict[str, dict[str, dict]] = {}
    for mode, scope, p, r, f, _ in rows:
        scopes.setdefault(mode, {})[scope] = {"precision": p, "recall": r, "f1": f}
    result = {}
    for mode in ("strict", "lenient"):
        block = scopes[mode]
        if set(block) == {"macro_l1"}:
            result[mode] = block["macro_l1"]
        else:
            levels = sorted((int(scope.removeprefix("macro_l")), prf) for scope, prf in block.items() if scope.startswith("macro_"))
            macro = {f"l{level}": prf for level, prf in levels}
            result[mode] = {"hierarchical": block["hierarchical"], "macro": macro}
    return result, rows[0][5]


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

