"""Hierarchical decoding of flat category scores: L1, then L2 inside that branch, then L3, and so on to
the taxonomy's depth (any number of levels: the hierarchy is read from the paths).

A node's own document can be a poor witness for its branch ("Apparel & Accessories" says little
about a hat), so every node is judged by an aggregated score: a blend of its own similarity and the
best similarity anywhere in its subtree. The hard cascade commits to the best L1, then the best
L2 under it, and so on: an early mistake cannot be undone. The soft rule scores each complete path
by the mean of its levels' aggregated scores and takes the best path, which is what the cascade
returns when it keeps every branch open: a slightly weaker L1 can still win with a much better L3.
A node's path score is also the score of stopping there, so an L1 or L2 node is predicted when
nothing below it fits better (hierarchical F1 gives partial credit for a correct ancestor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from taxo_pipeline.dataset.taxonomy import SEPARATOR, split_path

# Own similarity and best-descendant similarity weigh the same: no evidence for preferring either.
OWN_WEIGHT = 0.5


@dataclass(frozen=True)
class Hierarchy:
    paths: tuple[str, ...]
    parent: np.ndarray  # index of each node's parent, -1 for L1 nodes
    depth: np.ndarray  # 1 for L1

    @classmethod
    def from_paths(cls, paths: Sequence[str]) -> Hierarchy:
        """Every ancestor of every path must be a path too (the trimmed taxonomy lists every ancestor node)."""
        index = {path: i for i, path in enumerate(paths)}
        if len(index) != len(paths):
            raise ValueError("category paths are not unique")
        parent, depth = [], []
        for path in paths:
            nodes = split_path(path)
            up = SEPARATOR.join(nodes[:-1])
            if up and up not in index:
                raise ValueError(f"category {path!r} has no parent node {up!r} in the taxonomy")
            parent.append(index[up] if up else -1)
            depth.append(len(nodes))
        return cls(tuple(paths), np.array(parent, dtype=np.int64), np.array(depth, dtype=np.int64))

    def children(self) -> dict[int, np.ndarray]:
        """Node -> its children's indices, for nodes that have any; key -1 (the root) holds the L1 nodes."""
        grouped: dict[int, list[int]] = {}
        for node, up in enumerate(self.parent.tolist()):
            grouped.setdefault(up, []).append(node)
        return {node: np.array(kids) for node, kids in grouped.items()}

    def levels(self) -> list[np.ndarray]:
        """Node indices per depth, L1 first."""
        return [np.flatnonzero(self.depth == d) for d in range(1, int(self.depth.max(initial=0)) + 1)]


def subtree_max(scores: np.ndarray, hierarchy: Hierarchy) -> np.ndarray:
    """Per node, the best score of the node itself or any descendant."""
    best = np.array(scores, dtype=np.float64)
    for nodes in reversed(hierarchy.levels()[1:]):  # deepest level first, so maxima climb to L1
        np.maximum.at(best, (slice(None), hierarchy.parent[nodes]), best[:, nodes])
    return best


def node_scores(scores: np.ndarray, hierarchy: Hierarchy, own_weight: float = OWN_WEIGHT) -> np.ndarray:
    """Aggregated node scores: own_weight x own score + (1 - own_weight) x best in the subtree."""
    if not 0 <= own_weight <= 1:
        raise ValueError(f"own_weight must be in [0, 1], got {own_weight}")
    return own_weight * np.asarray(scores, dtype=np.float64) + (1 - own_weight) * subtree_max(scores, hierarchy)


def path_scores(aggregated: np.ndarray, hierarchy: Hierarchy) -> np.ndarray:
    """Per node, the mean aggregated score over its path (its ancestors and itself): the soft
    cascade's score of stopping at that node."""
    sums = np.zeros_like(aggregated, dtype=np.float64)
    for level, nodes in enumerate(hierarchy.levels(), start=1):
        sums[:, nodes] = aggregated[:, nodes] + (sums[:, hierarchy.parent[nodes]] if level > 1 else 0)
    return sums / hierarchy.depth


def hard_cascade(aggregated: np.ndarray, hierarchy: Hierarchy) -> np.ndarray:
    """Per product, the node reached by committing to the best child at each level until a node
    without children: the textbook top-down classifier, reported next to the soft rule."""
    children = hierarchy.children()
    chosen = np.empty(aggregated.shape[0], dtype=np.int64)
    for row, row_scores in enumerate(aggregated):
        node = -1
        while (kids := children.get(node)) is not None:
            node = int(kids[np.argmax(row_scores[kids])])
        chosen[row] = node
    return chosen
