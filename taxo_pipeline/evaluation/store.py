"""Storing and reading back an evaluation's results: the rows of predictions, request latencies, datasets
and metrics built from what an approach returned, and the reference's blocks rebuilt from the stored
metrics. The tables and their SQL are warehouse/results.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, Depth, depth_label
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.metrics import latency_summary
from taxo_pipeline.evaluation.tables import metric_rows
from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.warehouse import results
from taxo_pipeline.warehouse.publication import settings_rows
from taxo_pipeline.warehouse.results import DEPTH
from taxo_pipeline.warehouse.store import Warehouse

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
    other predictions). Readers keep the published copies until the rerun is whole
    (warehouse/publication.py). Returns the prediction rows."""
    rows = prediction_rows(key, product_ids, ranked)
    dataset = pa.table({"dataset": [key.dataset], "products": pa.array([products], pa.int64()), "scope": [scope],
                        "recorded_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
                        DEPTH: [depth_label(depth)]})  # fmt: skip
    settings = settings_rows([tuple(key.columns.values())], [model_fingerprint])
    results.write_results(warehouse, key, rows, latency_rows(key, requests), dataset, settings)
    return rows.num_rows


def latency(warehouse: Warehouse, key: ResultKey, stage: str) -> dict:
    """The reference's latency block {p50, p95, request_count, batch_size} for one stage; the
    batch size is the largest request's, i.e. the configured one."""
    rows = results.stage_latencies(warehouse, key, stage)
    return latency_summary([r[0] for r in rows], max((r[1] for r in rows), default=0))


def save_metrics(
    warehouse: Warehouse, key: ResultKey, result: dict, count: int, latency_block: dict, evaluation: str, headline: str,
    depth: Depth = MAX_LEVEL,
) -> pa.Table:
    rows = metric_rows(
        result, key, count=count, latency=latency_block if latency_block["request_count"] else None,
        evaluation=evaluation, headline=headline,
    )  # fmt: skip
    rows = rows.append_column(DEPTH, pa.array([depth_label(depth)] * rows.num_rows, pa.string()))
    results.write_metrics(warehouse, key, rows)
    return rows


def load_metrics(warehouse: Warehouse, key: ResultKey) -> tuple[dict, int]:
    """The strict/lenient blocks as the reference nests them, rebuilt from the long rows: for path
    approaches {hierarchical, macro: {l1, l2, l3}} (one per level at other depths), for L1-only approaches (NLI) the L1 P/R/F1 itself."""
    rows = results.metric_rows(warehouse, key)
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
