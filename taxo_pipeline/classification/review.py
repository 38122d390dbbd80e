"""The review queue of a catalogue run: with a target precision P, a product needs review when its
confidence is below the review threshold (taxo_pipeline/classification/coverage.py: the smallest
threshold whose held-out products reach P in exact precision and in mean confidence), when no threshold
reaches P, or when it got no prediction; never once a person reviewed it (classification/reviewer_labels.py).
The warehouse view `review_queue` (warehouse/classifications.py) lists them, most useful first: lowest confidence, then the largest
predicted categories (a correction there fixes the most look-alike products), each with how many levels
its prediction reaches and why it stops above the taxonomy's depth.

A prediction stops early when the classifier scores a node itself above every node below it: the soft
cascade's path score is also the score of stopping at a node (retrieval/cascade.py), flat retrieval
ranks L1 and L2 documents with the L3 ones, and label transfer adds votes to the same node scores. The
stored top-k shows the best node below the stop, when there is one among the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxo_pipeline.classification.coverage import coverage_lines
from taxo_pipeline.classification.shards import MERCHANT, PREDICTED, REVIEWER, SOURCE, refresh_view
from taxo_pipeline.warehouse.classifications import refresh_review_queue
from taxo_pipeline.warehouse.store import Warehouse

NEEDS_REVIEW = "needs_review"  # the shard files' column, which the review_queue view reads


def needs_review(confidence: np.ndarray, threshold: float | None, target_precision: float | None) -> np.ndarray | None:
    """Per product: below the review threshold (no threshold reaching the target: every product; no
    prediction, confidence nan: always); None without a target precision."""
    if target_precision is None:
        return None
    confidence = np.asarray(confidence, dtype=np.float64)
    if threshold is None:
        return np.ones(len(confidence), dtype=bool)
    return ~(np.nan_to_num(confidence, nan=-np.inf) >= threshold)


def with_review(table: pa.Table, threshold: float | None, target_precision: float | None) -> pa.Table:
    """A shard table with its `needs_review` column (NULL without a target precision; false for a product
    whose category a person set: a reviewer or the merchant)."""
    flags = needs_review(table["confidence"].to_numpy(zero_copy_only=False), threshold, target_precision)
    if flags is not None:
        flags &= _by_model(table)
    column = pa.array(flags if flags is not None else [None] * table.num_rows, pa.bool_())
    return table.append_column(NEEDS_REVIEW, column)


def _by_model(table: pa.Table) -> np.ndarray:
    """Per row of a shard table: its category is the model's (not one a reviewer or the merchant set)."""
    return ~pc.is_in(table[SOURCE], value_set=pa.array([MERCHANT, REVIEWER])).to_numpy(zero_copy_only=False)


def refresh_catalogue_views(warehouse: Warehouse, data_dir: Path) -> None:
    """`classifications` (no rows until a catalogue run is published) and `review_queue` on it: the taxonomy
    asset creates them, so every copy of the warehouse has them from the first materialization."""
    refresh_view(warehouse, data_dir)
    refresh_review_queue(warehouse)


def catalogue_confidences(files: Sequence[Path]) -> np.ndarray:
    """The confidence of every product the model classified in a run's shard files (nan: no prediction); the
    products whose category a person set (merchant, reviewer) are not the threshold's to accept."""
    columns = []
    for file in files:
        table = pq.read_table(file, columns=["confidence", SOURCE])
        columns.append(table["confidence"].to_numpy(zero_copy_only=False)[_by_model(table)])
    return np.concatenate(columns).astype(np.float64) if columns else np.empty(0)


def accepted_categories(files: Sequence[Path]) -> dict[str, str]:
    """product id -> category of the predicted products a target precision accepted (needs_review false)."""
    found: dict[str, str] = {}
    for file in files:
        table = pq.read_table(file, columns=["product_id", "category", SOURCE, NEEDS_REVIEW])
        for product_id, category, source, review in zip(*(table[c].to_pylist() for c in table.column_names)):
            if source == PREDICTED and review is False:
                found[product_id] = category
    return found


def known_products(files: Sequence[Path], source: str) -> int:
    """Products of a run's shard files whose category came from `source` (merchant, reviewer)."""
    return sum(pq.read_table(f, columns=[SOURCE])[SOURCE].to_pylist().count(source) for f in files)


def run_summary(
    confidence: np.ndarray, correct: np.ndarray, files: Sequence[Path], targets: Sequence[float]
) -> list[str]:
    """The lines classify-products ends with: per target precision, the threshold, the share of this
    catalogue's products at or above it, and the held-out precision there; how many a person reviewed."""
    lines = coverage_lines(confidence, correct, catalogue_confidences(files), targets)
    if merchant := known_products(files, MERCHANT):
        lines.append(f"{merchant} products keep the category the merchant set: confidence 1, never queued")
    if reviewed := known_products(files, REVIEWER):
        lines.append(f"{reviewed} products keep a reviewer's category (TAXO_CORRECTIONS): confidence 1, never queued")
    return lines
