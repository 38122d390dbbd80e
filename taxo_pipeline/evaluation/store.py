"""Predictions, request latencies and metrics in the warehouse, one partition per (approach, model, variant).

Every approach writes the same three tables, so one SQL query compares them all. Each write
replaces the partition's rows in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from taxo_pipeline.evaluation.metrics import latency_summary
from taxo_pipeline.evaluation.tables import metric_rows
from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.warehouse import Warehouse

PREDICTIONS = "predictions"
LATENCIES = "request_latencies"
METRICS = "metrics"


@dataclass(frozen=True)
class Partition:
    approach: str
    model: str
    variant: str

    @property
    def keys(self) -> dict[str, str]:
        return {"approach": self.approach, "model": self.model, "variant": self.variant}


def clear_partition(
    warehouse: Warehouse, partition: Partition, tables: Sequence[str] = (PREDICTIONS, LATENCIES, METRICS)
) -> None:
    """Forget a partition's results, e.g. when it no longer applies (an image approach on a text model)."""
    with warehouse.transaction() as con:
        existing = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in tables:
            if table in existing:
                con.execute(
                    f"DELETE FROM {table} WHERE approach = ? AND model = ? AND variant = ?", list(partition.keys.values())
                )


def save_predictions(
    warehouse: Warehouse, partition: Partition, product_ids: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]
) -> int:
    """`ranked[i]` is product i's candidates, best first, as (category path, score: higher is better)."""
    now = datetime.now(UTC)
    records = [
        {**partition.keys, "product_id": pid, "rank": rank, "category": category, "score": float(score), "computed_at": now}
        for pid, candidates in zip(product_ids, ranked, strict=True)
        for rank, (category, score) in enumerate(candidates, start=1)
    ]
    schema = pa.schema(
        [("approach", pa.string()), ("model", pa.string()), ("variant", pa.string()), ("product_id", pa.string()),
         ("rank", pa.int32()), ("category", pa.string()), ("score", pa.float64()), ("computed_at", pa.timestamp("us", tz="UTC"))]
    )
    warehouse.replace_partition(PREDICTIONS, partition.keys, pa.Table.from_pylist(records, schema=schema))
    return len(records)


def save_latencies(warehouse: Warehouse, partition: Partition, stage: str, records: Sequence[LatencyRecord]) -> None:
    """Per-request latencies of one stage, replacing the partition's previous ones."""
    now = datetime.now(UTC)
    table = pa.table(
        {
            **{k: [v] * len(records) for k, v in partition.keys.items()},
            "stage": [stage] * len(records),
            "operation": [r.operation for r in records],
            "batch_size": pa.array([r.batch_size for r in records], pa.int32()),
            "latency_ms": pa.array([r.latency_ms for r in records], pa.float64()),
            "recorded_at": pa.array([now] * len(records), pa.timestamp("us", tz="UTC")),
        }
    )
    warehouse.replace_partition(LATENCIES, {**partition.keys, "stage": stage}, table)


def latency(warehouse: Warehouse, partition: Partition, stage: str) -> dict:
    """The reference's latency block {p50, p95, request_count, batch_size} for one stage; the
    batch size is the largest request's, i.e. the configured one."""
    rows = []
    if warehouse.table_exists(LATENCIES):
        with warehouse.connect(read_only=True) as con:
            rows = con.execute(
                f"SELECT latency_ms, batch_size FROM {LATENCIES} WHERE approach = ? AND model = ? AND variant = ? AND stage = ?",
                [*partition.keys.values(), stage],
            ).fetchall()
    return latency_summary([r[0] for r in rows], max((r[1] for r in rows), default=0))


def top1_with_truth(warehouse: Warehouse, partition: Partition) -> pl.DataFrame:
    """Each predicted product's top category next to its ground truth and potentials."""
    with warehouse.connect(read_only=True) as con:
        return con.sql(
            f"""
            SELECT p.product_id, p.category AS prediction, e.ground_truth_category, e.potential_product_categories
            FROM {PREDICTIONS} p JOIN products_experiment_l3 e USING (product_id)
            WHERE p.approach = ? AND p.model = ? AND p.variant = ? AND p.rank = 1
            ORDER BY p.product_id
            """,
            params=list(partition.keys.values()),
        ).pl()


def candidates_with_queries(warehouse: Warehouse, partition: Partition, top_k: int) -> pl.DataFrame:
    """Each product's first `top_k` stored candidates (best first) next to its description."""
    with warehouse.connect(read_only=True) as con:
        return con.sql(
            f"""
            SELECT p.product_id, any_value(e.product_description) AS description,
                   list(p.category ORDER BY p.rank) AS candidates
            FROM {PREDICTIONS} p JOIN products_experiment_l3 e USING (product_id)
            WHERE p.approach = ? AND p.model = ? AND p.variant = ? AND p.rank <= ?
            GROUP BY p.product_id ORDER BY p.product_id
            """,
            params=[*partition.keys.values(), top_k],
        ).pl()


def save_metrics(warehouse: Warehouse, partition: Partition, result: dict, count: int, latency_block: dict, evaluation: str = "zero-shot") -> pa.Table:
    rows = metric_rows(
        result, **partition.keys, count=count, latency=latency_block if latency_block["request_count"] else None,
        evaluation=evaluation,
    )
    warehouse.replace_partition(METRICS, partition.keys, rows)
    return rows


def load_metrics(warehouse: Warehouse, partition: Partition) -> tuple[dict, int]:
    """The strict/lenient blocks as the reference nests them, rebuilt from the long rows: for path
    approaches {hierarchical, macro: {l1, l2, l3}}, for L1-only approaches (NLI) the L1 P/R/F1 itself."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            f"SELECT mode, scope, precision, recall, f1, count FROM {METRICS} WHERE approach = ? AND model = ? AND variant = ?",
            list(partition.keys.values()),
        ).fetchall()
    if not rows:
        raise LookupError(f"no metrics in the warehouse for {partition}")
    scopes: dict[str, dict[str, dict]] = {}
    for mode, scope, p, r, f, _ in rows:
        scopes.setdefault(mode, {})[scope] = {"precision": p, "recall": r, "f1": f}
    result = {}
    for mode in ("strict", "lenient"):
        block = scopes[mode]
        if set(block) == {"macro_l1"}:
            result[mode] = block["macro_l1"]
        else:
            macro = {scope.removeprefix("macro_"): prf for scope, prf in sorted(block.items()) if scope.startswith("macro_")}
            result[mode] = {"hierarchical": block["hierarchical"], "macro": macro}
    return result, rows[0][5]


def headline_f1(warehouse: Warehouse, model: str) -> pl.DataFrame:
    """Strict and lenient headline F1 of every approach and variant stored for `model` and for its
    reranking pairs (`model + reranker`), best first. Headline as in the leaderboard view:
    hierarchical F1, or L1 macro F1 for NLI, which predicts the top level only."""
    with warehouse.connect(read_only=True) as con:
        return con.sql(
            f"""
            SELECT approach, model, variant, scope,
                   max(f1) FILTER (mode = 'strict') AS strict, max(f1) FILTER (mode = 'lenient') AS lenient
            FROM {METRICS}
            WHERE (model = ? OR starts_with(model, ? || ' + '))
              AND (scope = 'hierarchical' OR (approach = 'nli' AND scope = 'macro_l1'))
            GROUP BY ALL ORDER BY strict DESC, approach, model, variant
            """,
            params=[model, model],
        ).pl()
