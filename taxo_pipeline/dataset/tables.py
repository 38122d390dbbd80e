"""The derived tables the data assets write under the data folder, read back by the approaches, the
commands and catalogue runs: the taxonomy at the configured depth, the full taxonomy, the evaluation table;
and the reviewers' corrections, read from their file (TAXO_CORRECTIONS) each time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from taxo_pipeline.dataset.corrections import read_corrections
from taxo_pipeline.dataset.products import IMAGE
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.errors import InputError
from taxo_pipeline.retrieval.full_depth import FULL_DEPTH

if TYPE_CHECKING:
    from taxo_pipeline.workspace import Workspace


def load_trimmed_taxonomy(workspace: Workspace) -> TrimmedTaxonomy:
    """The taxonomy at the workspace's depth (TAXO_DEPTH)."""
    return TrimmedTaxonomy(pl.read_parquet(workspace.taxonomy_path)["path"].to_list(), workspace.depth)


def load_taxonomy_full_depth(workspace: Workspace, variant: str = FULL_DEPTH) -> list[str] | None:
    """Every category of the full taxonomy (taxonomy_full_depth), sorted, where the `variant`'s category
    documents are made of it (full-depth); None for the others, which do not read the table."""
    if variant != FULL_DEPTH:
        return None
    return pl.read_parquet(workspace.full_taxonomy_path)["path"].to_list()


def load_experiment(workspace: Workspace, with_images: bool = False) -> pl.DataFrame:
    """The evaluation table at the workspace's depth; image bytes only when asked for."""
    frame = pl.read_parquet(workspace.experiment_path)
    return frame if with_images or IMAGE not in frame.columns else frame.drop(IMAGE)


def load_corrections(workspace: Workspace) -> pl.DataFrame | None:
    """The reviewers' corrections in TAXO_CORRECTIONS, validated against the full taxonomy and trimmed to the
    workspace's depth; None when the variable is unset."""
    corrections = workspace.settings.corrections
    if corrections is None:
        return None
    if not workspace.full_taxonomy_path.is_file():
        raise InputError(f"corrections file {corrections} (TAXO_CORRECTIONS) is checked against the full taxonomy, "
                         f"which is not built in {workspace.data_dir}: run `taxo-pipeline materialize` first")  # fmt: skip
    return read_corrections(corrections, frozenset(load_taxonomy_full_depth(workspace)), workspace.depth)
