"""`label-transfer`: the cascade's scores (full-depth documents) plus the category votes of the most similar
labelled products (taxo_pipeline/retrieval/neighbour_votes.py). Evaluated under 5-fold cross-validation by product-id
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
from taxo_pipeline.retrieval.neighbour_votes import (
    FOLDS,
    NEIGHBOURS,
    TEMPERATURE,
    assign_folds,
    transfer_labels,
)

log = logging.getLogger(__name__)

CROSS_VALIDATED = f"{FOLDS}-fold cv"
OWN_NEIGHBOURS = 5  # a catalogue's labelled products that vote for each product (as the shop-only baseline)


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
        raise InputError("label transfer needs labelled products (products_experiment): run the main job first")
    if request.cross_validate:  # the products are the labelled ones: each votes only for the other folds
        products, scored = with_corrections(request, request.products)
        queries = query_vectors(request, products)
        scores, notes = cascade_scores(replace(request, products=products), queries)
        folds = assign_folds(products["product_id"].to_list())
        result = transfer_labels(scores, queries, _label_indices(request, products), folds, request.taxonomy.paths,
                                 scored=scored)  # fmt: skip
        scores, weights, weight_folds = result.scores[scored], result.weights, folds[scored]
    else:
        queries = _query_vectors(request)
        scores, notes = cascade_scores(request, queries)
        pool_vectors, labels, weight_folds, weights = labelled_pool(request, labelled)
        weight = float(np.median(list(weights.values())))
        if (voters := request.voters) is not None:  # the catalogue's own labelled products vote among themselves
            weight *= voters.pool_scale
            own_keys = (np.array(request.products["product_id"].to_list(), dtype=object), voters.ids)
            scores += voters.weight * pooled_votes(queries, voters.vectors, voters.labels, scores.shape[1],
                                                   OWN_NEIGHBOURS, own_keys)  # a labelled product never its own voter
            scores += voters.prior_weight * label_shares(voters.labels, scores.shape[1])
        scores = scores + weight * pooled_votes(queries, pool_vectors, labels, scores.shape[1])
    notes |= {
        "neighbours": NEIGHBOURS,
        "temperature": TEMPERATURE,
        "labelled_products": labelled.height,
        "corrections": 0 if request.corrections is None else request.corrections.height,
        "catalogue_voters": 0 if request.voters is None else len(request.voters.labels),
        "vote_weight_per_fold": _weights_table(weight_folds, weights),
    }
    return Classified(request.products["product_id"].to_list(), top_k(scores, request.taxonomy.paths, request.top_k), notes)


def _query_vectors(request: ClassifyRequest) -> np.ndarray:
    """The products' query vectors; a catalogue's labelled products reuse theirs from learning (same catalogue,
    same id, same text: the learning fingerprint holds their texts), so they are not encoded twice."""
    voters = request.voters
    if voters is None:
        return query_vectors(request)
    row = {product_id: i for i, product_id in enumerate(voters.ids.tolist())}
    known = [row.get(product_id) for product_id in request.products["product_id"].to_list()]
    vectors = np.empty((len(known), voters.vectors.shape[1]))
    if missing := [j for j, i in enumerate(known) if i is None]:
        vectors[missing] = query_vectors(request, request.products[missing])
    if found := [j for j, i in enumerate(known) if i is not None]:
        vectors[found] = voters.vectors[[known[j] for j in found]]
    return vectors


def pooled_votes(
    queries: np.ndarray,
    pool_vectors: np.ndarray,
    labels: np.ndarray,
    categories: int,
    neighbours: int = NEIGHBOURS,
    keys: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """neighbour_votes over a pool of any size (a catalogue's labelled products): the `neighbours` nearest by
    argpartition, a block of queries at a time, so memory stays at about 4M similarities whatever the pool.
    `keys` (per query, per pool member): a member whose key equals the query's does not vote for it (its own
    fold, its own product id). Ties at the k-th neighbour may pick another of the tied members than
    neighbour_votes' stable sort would."""
    votes = np.zeros((len(queries), categories))
    m = len(pool_vectors)
    k = min(neighbours, m)
    if k == 0:
        return votes
    step = max(16, (1 << 22) // max(m, 1))
    for start in range(0, len(queries), step):
        block = slice(start, start + step)
        similarity = queries[block] @ pool_vectors.T
        if keys is not None:
            similarity[keys[0][block, None] == keys[1][None, :]] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (len(similarity), 1))
        near = np.take_along_axis(similarity, nearest, axis=1)
        with np.errstate(invalid="ignore"):  # a query whose every member is excluded gets no votes, not NaN
            weights = np.exp((near - near.max(axis=1, keepdims=True)) / TEMPERATURE)
            weights = np.nan_to_num(weights / weights.sum(axis=1, keepdims=True), nan=0.0)
        rows = np.broadcast_to(np.arange(len(near))[:, None], nearest.shape)
        np.add.at(votes[block], (rows, labels[nearest]), weights)
    return votes


def label_shares(labels: np.ndarray, categories: int) -> np.ndarray:
    """Each category's share of the labels: a catalogue's prior (a shop sells few kinds of things)."""
    return np.bincount(labels, minlength=categories) / max(len(labels), 1)


@dataclass(frozen=True)
class CrossFit:
    """A catalogue's labelled products scored as label transfer scores a catalogue product, the evaluation's pool
    voting with its own weight or not at all and the catalogue's labelled products, from the other folds only
    (their votes and their category shares), with each candidate set of weights: per product and set, the top
    two categories and their scores."""

    weights: tuple[tuple[float, float, float], ...]  # (vote weight, prior weight, the pool's weight's scale)
    labels: np.ndarray  # each product's category (index into taxonomy.paths)
    folds: np.ndarray
    top: np.ndarray  # products x weights x 2: category indices, best first
    scores: np.ndarray  # products x weights x 2
    vectors: np.ndarray  # the products' unit-length vectors, for Voters
    ids: np.ndarray  # the products' ids, for Voters


def cross_fit(
    request: ClassifyRequest, labelled: pl.DataFrame, weights: tuple[tuple[float, float, float], ...], chunk: int = 512
) -> CrossFit:
    """`labelled` (product_id, title, description, ground_truth_category): a catalogue's own labelled products.
    Folds by product-id hash: a product's own votes come from the other folds, so none is its own evidence."""
    pool_vectors, pool_labels, _, pool_weights = labelled_pool(request, request.labelled)
    pool_weight = float(np.median(list(pool_weights.values())))
    # a reviewer's correction of a catalogue product sits in the pool under its id: never its own evidence
    pool_ids = np.array(with_corrections(request, request.labelled)[0]["product_id"].to_list(), dtype=object)
    ids = np.array(labelled["product_id"].to_list(), dtype=object)
    labels, folds = _label_indices(request, labelled), assign_folds(labelled["product_id"].to_list())
    started, n = time.perf_counter(), labelled.height
    vectors = np.vstack([query_vectors(request, labelled.slice(s, chunk)) for s in range(0, n, chunk)] or
                        [np.empty((0, pool_vectors.shape[1]))])  # fmt: skip
    top, scores = np.zeros((n, len(weights), 2), dtype=np.int32), np.zeros((n, len(weights), 2), dtype=np.float32)
    categories = len(request.taxonomy.paths)
    priors = np.vstack([label_shares(labels[folds != f], categories) for f in range(FOLDS)])  # per held-out fold
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        base, _ = cascade_scores(replace(request, products=labelled[rows]), vectors[rows])
        pool = pool_weight * pooled_votes(vectors[rows], pool_vectors, pool_labels, base.shape[1], keys=(ids[rows], pool_ids))
        own = pooled_votes(vectors[rows], vectors, labels, base.shape[1], OWN_NEIGHBOURS, (folds[rows], folds))
        prior = priors[folds[rows]]
        for j, (weight, prior_weight, pool_scale) in enumerate(weights):
            combined = base + weight * own + prior_weight * prior + pool_scale * pool
            best = np.argpartition(-combined, 1, axis=1)[:, :2]
            picked = np.take_along_axis(combined, best, axis=1)
            order = np.argsort(-picked, axis=1, kind="stable")
            top[rows, j], scores[rows, j] = np.take_along_axis(best, order, 1), np.take_along_axis(picked, order, 1)
        log.info("catalogue labels: %d of %d labelled products cross-fitted (%.0f products/s)", rows.stop, n,
                 rows.stop / max(time.perf_counter() - started, 1e-9))  # fmt: skip
    return CrossFit(tuple(weights), labels, folds, top, scores, vectors.astype(np.float32), ids)


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
