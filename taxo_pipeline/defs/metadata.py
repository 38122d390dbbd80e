"""Metadata helpers: row counts, schemas and markdown previews the Dagster UI shows."""

from __future__ import annotations

import dagster as dg
import polars as pl

from taxo_pipeline.classification.calibration import ECE_BINS, Calibration, max_gap
from taxo_pipeline.classification.coverage import LEVELS
from taxo_pipeline.evaluation.charts import Bar, bar_chart, line_chart, markdown_image
from taxo_pipeline.warehouse.results import headline_f1
from taxo_pipeline.warehouse.store import Warehouse


def table_metadata(frame: pl.DataFrame, preview_rows: int = 5) -> dict[str, dg.MetadataValue]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    shown = frame.head(preview_rows).select(
        [c for c, t in frame.schema.items() if t in (pl.String, pl.Int32, pl.Int64, pl.Float64, pl.Boolean)]
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        "preview": dg.MetadataValue.md(markdown_table(shown)),
    }


def markdown_table(frame: pl.DataFrame, width: int = 80) -> str:
    def cell(value) -> str:
        text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])


def metrics_metadata(result: dict, count: int, latency: dict) -> dict[str, dg.MetadataValue]:
    """Headline figures as numbers (the UI charts them across materializations) plus a table; L1-only
    results (NLI) have their L1 F1 as headline."""
    if "f1" in result["strict"]:
        scopes_by_mode = {mode: {"macro_l1": result[mode]} for mode in ("strict", "lenient")}
        headline = {f"{mode}_l1_f1": result[mode]["f1"] for mode in ("strict", "lenient")}
    else:
        scopes_by_mode = {
            mode: {"hierarchical": result[mode]["hierarchical"], **{f"macro_{k}": v for k, v in result[mode]["macro"].items()}}
            for mode in ("strict", "lenient")
        }
        headline = {f"{mode}_hf1": result[mode]["hierarchical"]["f1"] for mode in ("strict", "lenient")}
    lines = ["| mode | scope | precision | recall | f1 |", "| --- | --- | --- | --- | --- |"]
    for mode, scopes in scopes_by_mode.items():
        lines += [f"| {mode} | {s} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |" for s, v in scopes.items()]
    return {
        "count": dg.MetadataValue.int(count),
        **{name: dg.MetadataValue.float(value) for name, value in headline.items()},
        "latency_p50_ms": dg.MetadataValue.float(latency["p50"]),
        "latency_p95_ms": dg.MetadataValue.float(latency["p95"]),
        "latency_per_product_ms": dg.MetadataValue.float(latency.get("per_product") or 0.0),
        "metrics": dg.MetadataValue.md("\n".join(lines)),
    }


def hf1_chart_metadata(warehouse: Warehouse, model: str, dataset: str) -> dict[str, dg.MetadataValue]:
    """A bar chart of every approach's strict and lenient headline F1 stored for the model on this
    dataset, read back from the warehouse so it shows the approaches that ran before this one too
    (reranking pairs where the model retrieves; L1-only approaches labelled so)."""
    bars = [
        Bar(_approach_label(approach, reranker, variant, scope), strict, lenient)
        for approach, reranker, variant, scope, strict, lenient in headline_f1(warehouse, model, dataset).iter_rows()
    ]
    png = bar_chart(f"hF1 per approach: {model}", bars)
    return {"hf1_by_approach": dg.MetadataValue.md(markdown_image(png, "hF1 per approach"))}


def _approach_label(approach: str, reranker: str | None, variant: str, scope: str) -> str:
    if scope == "macro_l1":
        return f"{approach} (L1 F1)"
    return f"{approach} + {reranker} ({variant})" if reranker else f"{approach} ({variant})"


def calibration_metadata(calibration: Calibration, coverage: list[dict]) -> dict[str, dg.MetadataValue]:
    """Held-out reliability of the confidence classify-products will give, and what each threshold
    accepts (precision at coverage, from the held-out confidences): where to set a threshold."""
    bins = pl.DataFrame(list(calibration.reliability)).select(
        pl.format("{}-{}", pl.col("low").round(3), pl.col("high").round(3)).alias("confidence"),
        "products", pl.col("predicted").round(3), pl.col("observed").round(3),
    )  # fmt: skip
    series = [(f"{level} precision", [r["coverage"] for r in coverage], [r[f"precision_{level}"] for r in coverage])
              for level in LEVELS]  # fmt: skip
    png = line_chart("precision at coverage (held-out)", "coverage: share of products at or above the threshold",
                     series)  # fmt: skip
    return {
        "top1_accuracy": dg.MetadataValue.float(calibration.accuracy),
        "calibration_method": dg.MetadataValue.text(calibration.method),
        "calibration_ece": dg.MetadataValue.float(calibration.ece),
        "calibration_max_decile_gap": dg.MetadataValue.float(max_gap(calibration.reliability)),
        "calibration_methods_dev_brier": dg.MetadataValue.json(calibration.methods),
        "calibration_reliability": dg.MetadataValue.md(
            f"Held-out deciles ({ECE_BINS} bins, k-fold cross-fitted)\n\n" + markdown_table(bins)),
        "precision_at_coverage": dg.MetadataValue.md(markdown_image(png, "precision at coverage")),
    }
