"""Clean full-depth products -> the experiment table, labels trimmed to the taxonomy's depth (L3 by default:
seed-rules.md, "Trimming to L3")."""

from __future__ import annotations

import polars as pl

from taxo_pipeline.dataset.products import POTENTIALS
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.errors import InputError


def _dedupe(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))  # first-seen order kept


def trim_products(clean: pl.DataFrame, taxonomy: TrimmedTaxonomy) -> pl.DataFrame:
    """Trim ground truth and potentials to the taxonomy's depth. Potentials absent -> an empty list, so
    lenient metrics fall back to the ground truth alone."""
    truths = [taxonomy.trim(p) for p in clean["ground_truth_category"]]
    if POTENTIALS in clean.columns:
        potentials = [_dedupe([taxonomy.trim(p) for p in ps]) for ps in clean[POTENTIALS]]
    else:
        potentials = [[] for _ in truths]
    known = set(taxonomy.paths)
    for product_id, truth, extra in zip(clean["product_id"], truths, potentials, strict=True):
        unknown = [p for p in [truth, *extra] if p not in known]
        if unknown:  # the reference treats this as a bug, not a row to drop
            raise InputError(f"product {product_id}: trimmed label(s) {unknown} are not in the {taxonomy.name}")
    return clean.with_columns(
        pl.Series("ground_truth_category", truths, dtype=pl.String),
        pl.Series(POTENTIALS, potentials, dtype=pl.List(pl.String)),
    )
