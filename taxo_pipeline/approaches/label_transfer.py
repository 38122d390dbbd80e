"""`label-transfer`: the cascade's scores (full-depth documents) plus the category votes of the most similar
labelled products (taxo_pipeline/retrieval/label_transfer.py). Evaluated under 5-fold cross-validation by product-id
hash, so a product never votes for itself; on other products (a user's catalogue) every labelled
product may vote, with the vote weight chosen by cross-validation on the labelled products alone.

Reviewers' corrections (`request.corrections`, TAXO_CORRECTIONS) join the labelled pool as voters only:
they are never scored (the evaluation's rows and figures stay those of the labelled products) and never
choose the vote weight; under cross-validation each sits in the fold of its product id like any other
product, so a correction never votes for the evaluated product that shares its id."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

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

log = logging.getLogger(__name__)

CROSS_VALIDATED = f"{FOLDS}-fold cv"
VOTE_BLOCK = 256
OWN_NEIGHBOURS = 5  # queries whose similarities to a large pool (a catalogue's labelled products) are held at once


POOL_COLUMNS = ("product_id", "product_title", "product_description", "ground_truth_category")


def with_corrections(request: ClassifyRequest, labelled: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """The pool: `labelled`, then the request's corrections; and the mask of `labelled`'s rows (scored)."""
    corrections = request.corrections
    if corrections is None or corrections.height == 0:
        return labelled, np.ones(labelled.height, dtype=bool)
    pool = pl.concat([labelled.select(POOL_COLUMNS), corrections.select(POOL_COLUMNS)])
    return pool, np.arange(pool.height) < labelled.height


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


def labelled_pool(request: ClassifyRequest, labelled: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The labelled pool's vectors, labels and folds, and the vote weights its cross-validation chose."""
    products, scored = with_corrections(request, labelled)
    key = (id(request.evidence), request.model, request.variant, request.model_family,
           tuple(request.taxonomy.paths), product_set_fingerprint(products), scored.sum())  # fmt: skip
    if key not in _POOL:
        pool = replace(request, products=products)
        pool_vectors = query_vectors(pool)
        pool_scores, _ = cascade_scores(pool, pool_vectors)
        labels = _label_indices(request, products)
        folds = assign_folds(products["product_id"].to_list())
        weights = transfer_labels(pool_scores, pool_vectors, labels, folds, request.taxonomy.paths, scored=scored).weights
        while len(_POOL) >= POOLS_KEPT:
            _POOL.pop(next(iter(_POOL)))
        _POOL[key] = (pool_vectors, labels, folds, weights)
    return _POOL[key]


def classify(request: ClassifyRequest) -> Classified:
    labelled = request.labelled
    if labelled is None or labelled.height == 0:
        raise InputError("label transfer needs labelled products (products_experiment_l3): run the main job first")
    if request.cross_validate:  # the products are the labelled ones: each votes only for the other folds
        products, scored = with_corrections(request, request.products)
        queries = query_vectors(request, products)
        scores, notes = cascade_scores(replace(request, products=products), queries)
        folds = assign_folds(products["product_id"].to_list())
        result = transfer_labels(scores, queries, _label_indices(request, products), folds, request.taxonomy.paths,
                                 scored=scored)  # fmt: skip
        scores, weights, weight_folds = result.scores[scored], result.weights, folds[scored]
    else:
        queries = query_vectors(request)
        scores, notes = cascade_scores(request, queries)
        pool_vectors, labels, weight_folds, weights = labelled_pool(request, labelled)
        weight = float(np.median(list(weights.values())))
        scores = scores + weight * pooled_votes(queries, pool_vectors, labels, scores.shape[1])
        if (voters := request.voters) is not None:  # the catalogue's own labelled products vote among themselves
            scores += voters.weight * pooled_votes(queries, voters.vectors, voters.labels, scores.shape[1],
                                                   neighbours=OWN_NEIGHBOURS)
            scores += voters.prior_weight * label_shares(voters.labels, scores.shape[1])
    notes |= {
        "neighbours": NEIGHBOURS,
        "temperature": TEMPERATURE,
        "labelled_products": labelled.height,
        "corrections": 0 if request.corrections is None else request.corrections.height,
        "catalogue_voters": 0 if request.voters is None else len(request.voters.labels),
        "vote_weight_per_fold": _weights_table(weight_folds, weights),
    }
    return Classified(request.products["product_id"].to_list(), top_k(scores, request.taxonomy.paths, request.top_k), notes)


def pooled_votes(
    queries: np.ndarray,
    pool_vectors: np.ndarray,
    labels: np.ndarray,
    categories: int,
    excluded: np.ndarray | None = None,
    neighbours: int = NEIGHBOURS,
) -> np.ndarray:
    """neighbour_votes over a pool of any size, VOTE_BLOCK queries at a time (memory: a block x the pool);
    `excluded` (queries x pool, bool): pairs that may not vote, e.g. a catalogue product's own fold."""
    votes = np.zeros((len(queries), categories))
    for start in range(0, len(queries), VOTE_BLOCK):
        block = slice(start, start + VOTE_BLOCK)
        similarity = queries[block] @ pool_vectors.T
        if excluded is not None:
            similarity = np.where(excluded[block], -np.inf, similarity)
        votes[block] = neighbour_votes(similarity, labels, categories, neighbours).votes
    return votes


def label_shares(labels: np.ndarray, categories: int) -> np.ndarray:
    """Each category's share of the labels: a catalogue's prior (a shop sells few kinds of things)."""
    return np.bincount(labels, minlength=categories) / max(len(labels), 1)


@dataclass(frozen=True)
class CrossFit:
    """A catalogue's labelled products scored as label transfer scores a catalogue product, the evaluation's pool
    voting with its own weight and the catalogue's labelled products, from the other folds only (their votes and
    their category shares), with each candidate pair of weights: per product and pair, the top two categories
    and their scores."""

    weights: tuple[tuple[float, float], ...]  # (vote weight, prior weight)
    labels: np.ndarray  # each product's category (index into taxonomy.paths)
    folds: np.ndarray
    top: np.ndarray  # products x weights x 2: category indices, best first
    scores: np.ndarray  # products x weights x 2
    vectors: np.ndarray  # the products' unit-length vectors, for Voters


def cross_fit(
    request: ClassifyRequest, labelled: pl.DataFrame, weights: tuple[tuple[float, float], ...], chunk: int = 512
) -> CrossFit:
    """`labelled` (product_id, title, description, ground_truth_category): a catalogue's own labelled products.
    Folds by product-id hash: a product's own votes come from the other folds, so none is its own evidence."""
    pool_vectors, pool_labels, _, pool_weights = labelled_pool(request, request.labelled)
    pool_weight = float(np.median(list(pool_weights.values())))
    labels, folds = _label_indices(request, labelled), assign_folds(labelled["product_id"].to_list())
    started, n = time.perf_counter(), labelled.height
    vectors = np.vstack([query_vectors(request, labelled.slice(s, chunk)) for s in range(0, n, chunk)] or
                        [np.empty((0, pool_vectors.shape[1]))])  # fmt: skip
    top, scores = np.zeros((n, len(weights), 2), dtype=np.int64), np.zeros((n, len(weights), 2))
    categories = len(request.taxonomy.paths)
    priors = np.vstack([label_shares(labels[folds != f], categories) for f in range(FOLDS)])  # per held-out fold
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        base, _ = cascade_scores(replace(request, products=labelled[rows]), vectors[rows])
        base += pool_weight * pooled_votes(vectors[rows], pool_vectors, pool_labels, base.shape[1])
        own = pooled_votes(vectors[rows], vectors, labels, base.shape[1], folds[rows, None] == folds[None, :], OWN_NEIGHBOURS)
        prior = priors[folds[rows]]
        for j, (weight, prior_weight) in enumerate(weights):
            combined = base + weight * own + prior_weight * prior
            best = np.argpartition(-combined, 1, axis=1)[:, :2]
            picked = np.take_along_axis(combined, best, axis=1)
            order = np.argsort(-picked, axis=1, kind="stable")
            top[rows, j], scores[rows, j] = np.take_along_axis(best, order, 1), np.take_along_axis(picked, order, 1)
        log.info("catalogue labels: %d of %d labelled products cross-fitted (%.0f products/s)", rows.stop, n,
                 rows.stop / max(time.perf_counter() - started, 1e-9))  # fmt: skip
    return CrossFit(tuple(weights), labels, folds, top, scores, vectors.astype(np.float32))


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
