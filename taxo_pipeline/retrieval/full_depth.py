"""The `full-depth` category documents: every node of the full taxonomy (all levels, down to L8), each
its own document (its full path), scored for the node it trims to (L1-L3 at the default depth; at
TAXO_DEPTH=full every document is its own node) by the best of its subtree.

Predictions stay L1-L3 nodes, but an L3 name leaves out what its deeper levels say: `Hats` holds
`Panama Hats`, `Beanies`, `Sombreros` ... A product about a Panama hat is close to the document
`Apparel & Accessories > Clothing Accessories > Hats > Panama Hats`, and that similarity becomes the
score of `... > Hats`. Each deeper node stays a separate document instead of being listed inside its L3
node's document: a mean-pooled encoder blurs a long list of names into its average, while the best
match keeps the one name that fits (bench/quality.py compares both on the development part).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, split_path
from taxo_pipeline.retrieval.categories import CategoryDocuments

FULL_DEPTH = "full-depth"


def full_depth_documents(categories: Sequence[str], taxonomy: TrimmedTaxonomy) -> CategoryDocuments:
    """One document per category of the full taxonomy (`parse_categories` of the file `taxonomy` was
    trimmed from): ids and documents are the full paths, unique, in the file's order."""
    known = set(taxonomy.paths)
    ids = list(dict.fromkeys(categories))
    if outside := [c for c in ids if taxonomy.trim(c) not in known]:
        raise ValueError(
            f"{len(outside)} categories trim to no node of the {taxonomy.name} (first: {outside[0]!r}): "
            "build both from the same categories file"
        )
    if missing := known - {taxonomy.trim(c) for c in ids}:
        raise ValueError(f"{len(missing)} {taxonomy.name} nodes have no category (first: {sorted(missing)[0]!r})")
    return CategoryDocuments(ids=ids, documents=list(ids), levels=[len(split_path(c)) for c in ids])


def node_columns(document_ids: Sequence[str], taxonomy: TrimmedTaxonomy) -> np.ndarray:
    """Per document, the column (index in taxonomy.paths) of the node it speaks for."""
    column = {path: i for i, path in enumerate(taxonomy.paths)}
    try:
        return np.array([column[taxonomy.trim(d)] for d in document_ids], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"document {exc.args[0]!r} trims to no node of the {taxonomy.name}") from exc


class NodeMap:
    """Which documents each taxonomy node takes its best score from, worked out once for a document list:
    the documents in node order and where each node's run starts, so a score matrix becomes node scores
    in one vectorised pass (the classification service maps every request with the same NodeMap)."""

    def __init__(self, document_ids: Sequence[str], taxonomy: TrimmedTaxonomy):
        columns = node_columns(document_ids, taxonomy)
        self.documents, self.nodes = len(document_ids), len(taxonomy.paths)
        self.order = np.argsort(columns, kind="stable")
        self.starts = np.searchsorted(columns[self.order], np.arange(self.nodes))
        self.empty = [taxonomy.paths[i] for i in np.setdiff1d(np.arange(self.nodes), columns)]

    def best(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != self.documents:
            raise ValueError(f"scores of shape {scores.shape} do not match {self.documents} documents")
        if not scores.shape[0]:
            return np.full((0, self.nodes), -np.inf)
        if self.empty:
            raise ValueError(f"{len(self.empty)} taxonomy nodes have no document (first: {self.empty[0]!r})")
        return np.maximum.reduceat(scores[:, self.order], self.starts, axis=1)


def best_per_node(scores: np.ndarray, document_ids: Sequence[str], taxonomy: TrimmedTaxonomy) -> np.ndarray:
    """Products x documents scores -> products x taxonomy.paths: per node, the best score among the
    documents of its full-depth subtree that trim to it (its own path included)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != len(document_ids):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(document_ids)} documents")
    return NodeMap(document_ids, taxonomy).best(scores)
