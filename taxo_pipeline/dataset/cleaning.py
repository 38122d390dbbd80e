"""Raw products -> clean full-depth table, by the seed's rules (seed-rules.md, "Cleaning").

A column absent from the input is not required (no image column: image approaches skip the
table; no potentials: lenient equals strict); a present but empty value drops the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from taxo_pipeline.dataset.products import IMAGE, POTENTIALS

# Checked in this order; a row is counted under the first reason it fails.
DROP_REASONS = (
    "empty_title",
    "empty_description",
    "empty_ground_truth",
    "empty_potentials",
    "empty_image",
    "ground_truth_not_in_taxonomy",
    "potential_not_in_taxonomy",
)


@dataclass
class CleaningReport:
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)


def _blank(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | (expr == "")


def clean_products(raw: pl.DataFrame, valid_categories: list[str]) -> tuple[pl.DataFrame, CleaningReport]:
    valid = pl.Series(sorted(set(valid_categories)), dtype=pl.String).implode()
    frame = raw.with_columns(
        pl.col("product_title", "product_description", "ground_truth_category").str.strip_chars()
    )
    checks: dict[str, pl.Expr] = {
        "empty_title": _blank(pl.col("product_title")),
        "empty_description": _blank(pl.col("product_description")),
        "empty_ground_truth": _blank(pl.col("ground_truth_category")),
        "ground_truth_not_in_taxonomy": ~pl.col("ground_truth_category").is_in(valid),
    }
    if POTENTIALS in frame.columns:
        frame = frame.with_columns(pl.col(POTENTIALS).list.eval(pl.element().str.strip_chars()))
        checks["empty_potentials"] = (
            pl.col(POTENTIALS).is_null()
            | (pl.col(POTENTIALS).list.len() == 0)
            | pl.col(POTENTIALS).list.eval(_blank(pl.element())).list.any()
        )
        checks["potential_not_in_taxonomy"] = ~pl.col(POTENTIALS).list.eval(pl.element().is_in(valid)).list.all()
    if IMAGE in frame.columns:
        frame = frame.with_columns(
            pl.struct(
                pl.col(IMAGE).struct.field("bytes"),
                pl.col(IMAGE).struct.field("path").str.strip_chars(),
            ).alias(IMAGE)
        )
        image_bytes = pl.col(IMAGE).struct.field("bytes")
        checks["empty_image"] = (
            pl.col(IMAGE).is_null()
            | image_bytes.is_null()
            | (image_bytes.bin.size() == 0)
            | _blank(pl.col(IMAGE).struct.field("path"))
        )

    reason = pl.lit(None, dtype=pl.String)
    for name in reversed(DROP_REASONS):
        if name in checks:
            reason = pl.when(checks[name].fill_null(True)).then(pl.lit(name)).otherwise(reason)
    frame = frame.with_columns(reason.alias("_drop_reason"))

    counts = dict(frame.group_by("_drop_reason").len().drop_nulls("_drop_reason").iter_rows())
    dropped = {name: counts.get(name, 0) for name in DROP_REASONS if name in checks}
    keep = ["product_id", "product_title", "product_description", "ground_truth_category"]
    keep += [c for c in (POTENTIALS, IMAGE) if c in frame.columns]
    clean = frame.filter(pl.col("_drop_reason").is_null()).select(keep)
    return clean, CleaningReport(rows_in=raw.height, rows_out=clean.height, dropped=dropped)
