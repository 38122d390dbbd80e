"""The derived tables the data assets write under the data folder, read back by the approaches, the
commands and catalogue runs: the taxonomy at the configured depth, the full taxonomy, the evaluation table;
and the reviewers' corrections, read from their file (TAXO_CORRECTIONS) each time."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from taxo_pipeline import settings
from taxo_pipeline.dataset.corrections import read_corrections
from taxo_pipeline.dataset.products import IMAGE
from taxo_pipeline.dataset.taxonomy import TaxonomyL3
from taxo_pipeline.errors import InputError
from taxo_pipeline.retrieval.full_depth import FULL_DEPTH


def load_taxonomy_l3(data_dir: Path) -> TaxonomyL3:
    """The taxonomy at the configured depth (TAXO_DEPTH)."""
    depth = settings.current().depth
    return TaxonomyL3(pl.read_parquet(data_dir / settings.taxonomy_file(depth))["path"].to_list(), depth)


def load_taxonomy_full_depth(data_dir: Path, variant: str = FULL_DEPTH) -> list[str] | None:
    """Every category of the full taxonomy (taxonomy_full_depth), sorted, where the `variant`'s category
    documents are made of it (full-depth); None for the others, which do not read the table."""
    if variant != FULL_DEPTH:
        return None
    return pl.read_parquet(data_dir / settings.TAXONOMY_FULL_DEPTH_FILE)["path"].to_list()


def load_experiment(data_dir: Path, with_images: bool = False) -> pl.DataFrame:
    """The evaluation table at the configured depth; image bytes only when asked for."""
    frame = pl.read_parquet(data_dir / settings.current().experiment_file())
    return frame if with_images or IMAGE not in frame.columns else frame.drop(IMAGE)


def load_corrections(data_dir: Path) -> pl.DataFrame | None:
    """The reviewers' corrections in TAXO_CORRECTIONS, validated against the full taxonomy and trimmed to the
    configured depth; None when the variable is unset."""
    current = settings.current()
    if current.corrections is None:
        return None
    if not (data_dir / settings.TAXONOMY_FULL_DEPTH_FILE).is_file():
        raise InputError(f"corrections file {current.corrections} (TAXO_CORRECTIONS) is checked against the full "
                         f"taxonomy, which is not built in {data_dir}: run `taxo-pipeline materialize` first")  # fmt: skip
    categories = frozenset(load_taxonomy_full_depth(data_dir))
    return read_corrections(current.corrections, categories, current.depth)
