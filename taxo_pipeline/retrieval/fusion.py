"""Score fusion: several product x category score matrices (leaf and full-path documents, text and
image queries) combined into one.

Each source is standardised per product (mean 0, standard deviation 1 over the categories) before
the weighted mean, so a source's weight is its real share: raw cosines of different sources live
on different scales (CLIP image-to-text similarities sit far below text-to-text ones). A source can
be missing for some products (no image): those products average the sources they have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreSource:
    name: str
    scores: np.ndarray  # products x categories, higher is better
    weight: float = 1.0
    present: np.ndarray | None = None  # bool per product; None: every product has this source

    def mask(self) -> np.ndarray:
        return np.ones(self.scores.shape[0], bool) if self.present is None else np.asarray(self.present, bool)


def standardise(scores: np.ndarray) -> np.ndarray:
    """Per row: (score - mean) / std over the columns; a constant row becomes zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def fuse(sources: Sequence[ScoreSource]) -> np.ndarray:
    """Per product, the weighted mean of the standardised scores of the sources it has."""
    if not sources:
        raise ValueError("nothing to fuse: no score source given")
    shape = sources[0].scores.shape
    for source in sources:
        if source.scores.shape != shape:
            raise ValueError(f"source {source.name!r} has scores of shape {source.scores.shape}, expected {shape}")
        if source.weight < 0:
            raise ValueError(f"source {source.name!r} has a negative weight {source.weight}")
    total = np.zeros(shape)
    weight = np.zeros((shape[0], 1))
    for source in sources:
        rows = source.mask()
        total[rows] += source.weight * standardise(source.scores[rows])
        weight[rows] += source.weight
    if (lacking := np.flatnonzero(weight[:, 0] == 0)).size:
        raise ValueError(f"{lacking.size} products have no score source with a positive weight (first: row {lacking[0]})")
    return total / weight
