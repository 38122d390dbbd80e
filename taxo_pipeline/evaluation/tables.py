"""Long-format metric rows for the shared `metrics` table: one SQL query compares every approach."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from taxo_pipeline.evaluation.keys import ResultKey

METRICS_SCHEMA = pa.schema(
    [
        ("approach", pa.string()),
        ("model", pa.string()),
        ("reranker", pa.string()),  # NULL but for reranking pairs
        ("variant", pa.string()),
        ("dataset", pa.string()),  # fingerprint of the products evaluated
        ("mode", pa.string()),  # strict | lenient
        ("scope", pa.string()),  # hierarchical | macro_l1 | macro_l2 | macro_l3
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("f1", pa.float64()),
        ("count", pa.int64()),
        ("latency_p50_ms", pa.float64()),
        ("latency_p95_ms", pa.float64()),
        # every query-side SIE request of the approach (all stages but the category index), per product
        ("latency_per_product_ms", pa.float64()),
        ("evaluation", pa.string()),  # how the figures were obtained, e.g. "zero-shot" or "5-fold cv"
        ("headline", pa.bool_()),  # the row the leaderboard ranks by: hierarchical F1, or L1 macro F1
        ("computed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _flatten(result: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """(mode, scope, prf) for the reference's strict/lenient blocks, path or L1 shaped."""
    rows = []
    for mode in ("strict", "lenient"):
        block = result[mode]
        if "f1" in block:  # L1-only approaches (NLI)
            rows.append((mode, "macro_l1", block))
            continue
        rows.append((mode, "hierarchical", block["hierarchical"]))
        rows += [(mode, f"macro_{level}", prf) for level, prf in block["macro"].items()]
    return rows


def metric_rows(
    result: dict[str, dict],
    key: ResultKey,
    *,
    count: int,
    latency: dict | None = None,
    evaluation: str = "zero-shot",
    headline: str = "hierarchical",
) -> pa.Table:
    now = datetime.now(UTC)
    latency = latency or {}
    headline_scope = "hierarchical" if headline == "hierarchical" else f"macro_{headline}"
    records = [
        {
            **key.columns,
            "mode": mode,
            "scope": scope,
            "precision": prf["precision"],
            "recall": prf["recall"],
            "f1": prf["f1"],
            "count": count,
            "latency_p50_ms": latency.get("p50"),
            "latency_p95_ms": latency.get("p95"),
            "latency_per_product_ms": latency.get("per_product"),
            "evaluation": evaluation,
            "headline": scope == headline_scope,
            "computed_at": now,
        }
        for mode, scope, prf in _flatten(result)
    ]
    return pa.Table.from_pylist(records, schema=METRICS_SCHEMA)
