"""`label-transfer`: the cascade's scores (full-depth documents) plus the category votes of the most similar
labelled products (taxo_pipeline/retrieval/label_transfer.py). Evaluated under 5-fold cross-validation by product-id
hash, so a product never votes for itself; on other products (a user's catalogue) every labelled
product may vote, with the vote weight chosen by cross-validation on the labelled products alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from taxo_pipeline.approaches.hierarchical_cascade import cascade_scores
from taxo_pipeline.approaches.spec import MODEL, Approach, Classified, ClassifyRequest
from taxo_pipeline.approaches.title_description import query_vectors
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import product_set_fingerprint
from taxo_pipeline.retrieval.exact_search import top_k
from taxo_pipeline.retrieval.full_depth import FULL_DEPTH
from taxo_pipeline.retrieval.label_transfer import (
    FOLDS,
    NEIGHBOURS,
    TEMPERATURE,
    assign_folds,
    neighbour_votes,
    transfer_labels,
)

CROSS_VALIDATED = f"{FOLDS}-fold cv"


def _label_indices(request: ClassifyRequest, labelled: pl.DataFrame) -> np.ndarray:
    index = {path: i for i, path in enumerate(request.taxonomy.paths)}
    truths = labelled["ground_truth_category"].to_list()
    if unknown := [t for t in truths if t not in index]:
        raise InputError(
            f"label transfer: {len(unknown)} labels of the labelled products are not taxonomy nodes "
            f"(first: {unknown[0]!r}); rematerialize the data assets"
        )
    return np.array([index[t] for t in truths], dtype=np.int64)


def _weights_table(folds: np.ndarray, weights: dict[int, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "fold": list(weights),
            "products": [int(np.count_nonzero(folds == f)) for f in weights],
            "vote_weight": list(weights.values()),
        }
    )


# The last two pools', so a catalogue classified in chunks computes its pool once, and the classification
# service's requests on the current result keep theirs while a re-evaluated result warms up beside it.
_POOL: dict[tuple, tuple] = {}
POOLS_KEPT = 2


def _pool(request: ClassifyRequest, labelled: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The labelled pool's vectors, labels and folds, and the vote weights its cross-validation chose."""
    key = (id(request.evidence), request.model, request.variant, request.model_family,
           tuple(request.taxonomy.paths), product_set_fingerprint(labelled))  # fmt: skip
    if key not in _POOL:
        pool = replace(request, products=labelled)
        pool_vectors = query_vectors(pool)
        pool_scores, _ = cascade_scores(pool, pool_vectors)
        labels = _label_indices(request, labelled)
        folds = assign_folds(labelled["product_id"].to_list())
        weights = transfer_labels(pool_scores, pool_vectors, labels, folds, request.taxonomy.paths).weights
        while len(_POOL) >= POOLS_KEPT:
            _POOL.pop(next(iter(_POOL)))
        _POOL[key] = (pool_vectors, labels, folds, weights)
    return _POOL[key]


def classify(request: ClassifyRequest) -> Classified:
    labelled = request.labelled
    if labelled is None or labelled.height == 0:
        raise InputError("label transfer needs labelled products (products_experiment_l3): run the main job first")
    queries = query_vectors(request)
    scores, notes = cascade_scores(request, queries)
    if request.cross_validate:  # the products are the labelled ones: each votes only for the other folds
        folds = assign_folds(request.products["product_id"].to_list())
        result = transfer_labels(scores, queries, _label_indices(request, request.products), folds, request.taxonomy.paths)
        scores, weights, weight_folds = result.scores, result.weights, folds
    else:
        pool_vectors, labels, weight_folds, weights = _pool(request, labelled)
        weight = float(np.median(list(weights.values())))
        scores = scores + weight * neighbour_votes(queries @ pool_vectors.T, labels, scores.shape[1]).votes
    notes |= {
        "neighbours": NEIGHBOURS,
        "temperature": TEMPERATURE,
        "labelled_products": labelled.height,
        "vote_weight_per_fold": _weights_table(weight_folds, weights),
    }
    return Classified(request.products["product_id"].to_list(), top_k(scores, request.taxonomy.paths, request.top_k), notes)


APPROACH = Approach(
    name="label-transfer",
    score="the cascade's score plus the votes of the nearest labelled products: higher is better",
    description="The cascade's scores plus votes of the 10 nearest labelled products (5-fold CV in evaluation).",
    classify=classify,
    partitioning=MODEL,
    families=("text", "image"),
    stage="query_encode",
    batch_size=64,
    needs_labels=True,
    evaluation=CROSS_VALIDATED,
    documents=FULL_DEPTH,
)
