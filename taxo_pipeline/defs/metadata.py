"""Metadata helpers: row counts, schemas and markdown previews the Dagster UI shows."""

from __future__ import annotations

import dagster as dg
import polars as pl

from taxo_pipeline.evaluation.charts import Bar, bar_chart, markdown_image
from taxo_pipeline.evaluation.store import headline_f1
from taxo_pipeline.warehouse import Warehouse


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
    """Headline figures as numbers (the UI charts them across materializations) plus a table."""
    lines = ["| mode | scope | precision | recall | f1 |", "| --- | --- | --- | --- | --- |"]
    for mode in ("strict", "lenient"):
        block = result[mode]
        scopes = {"hierarchical": block["hierarchical"], **{f"macro_{k}": v for k, v in block["macro"].items()}}
        lines += [f"| {mode} | {s} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |" for s, v in scopes.items()]
    return {
        "count": dg.MetadataValue.int(count),
        "strict_hf1": dg.MetadataValue.float(result["strict"]["hierarchical"]["f1"]),
        "lenient_hf1": dg.MetadataValue.float(result["lenient"]["hierarchical"]["f1"]),
        "latency_p50_ms": dg.MetadataValue.float(latency["p50"]),
        "latency_p95_ms": dg.MetadataValue.float(latency["p95"]),
        "metrics": dg.MetadataValue.md("\n".join(lines)),
    }


def hf1_chart_metadata(warehouse: Warehouse, model: str) -> dict[str, dg.MetadataValue]:
    """A bar chart of every approach's strict and lenient hF1 stored for the model, all variants, read
    back from the warehouse so it shows the approaches that ran before this one too. A reranking
    partition's model names the pair `retriever + reranker`: it gets the retriever's chart, which
    holds its reranking rows. NLI rows show L1 F1, labelled so."""
    retriever = model.split(" + ")[0]
    bars = [
        Bar(_approach_label(retriever, approach, pair, variant, scope), strict, lenient)
        for approach, pair, variant, scope, strict, lenient in headline_f1(warehouse, retriever).iter_rows()
    ]
    png = bar_chart(f"hF1 per approach: {retriever}", bars)
    return {"hf1_by_approach": dg.MetadataValue.md(markdown_image(png, "hF1 per approach"))}


def _approach_label(retriever: str, approach: str, model: str, variant: str, scope: str) -> str:
    if scope == "macro_l1":
        return f"{approach} (L1 F1)"
    reranker = model.removeprefix(f"{retriever} + ")
    return f"{approach} ({variant})" if model == retriever else f"{approach} + {reranker} ({variant})"
