"""Label transfer: the nearest labelled products vote for their categories, and the votes are
added to the category-retrieval scores.

Evaluated honestly with k-fold cross-validation: each product gets a fold from a hash of its id
(deterministic, independent of row order), and its neighbours come only from the other folds, so
a product never votes for itself and no label of its fold is seen. The one tuned number, the
weight of the votes, is chosen inside each training split (nested: its own folds play the
held-out part), never on the fold it is applied to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from taxo_pipeline.evaluation.metrics import hierarchical_prf

FOLDS = 5
NEIGHBOURS = 10
# Neighbour weights are softmax(similarity / T). all-MiniLM-L6-v2 was trained with a similarity
# scale of 20, i.e. T = 0.05: its own notion of how sharply similarity becomes probability.
TEMPERATURE = 0.05
# Candidate vote weights, in units of the retrieval scores (standardised: about one standard
# deviation of a product's category scores). Doubling steps, so no scale is favoured; 0 lets the
# selection switch votes off when they do not help.
VOTE_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def fold_of(product_id: str, folds: int = FOLDS) -> int:
    return int.from_bytes(hashlib.sha256(product_id.encode("utf-8")).digest()[:8], "big") % folds


def assign_folds(product_ids: Sequence[str], folds: int = FOLDS) -> np.ndarray:
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    return np.array([fold_of(pid, folds) for pid in product_ids], dtype=np.int64)


@dataclass(frozen=True)
class Votes:
    votes: np.ndarray  # queries x categories, each row sums to 1 (0 without neighbours)
    neighbours: np.ndarray  # queries x k, row indices into the candidates, -1 where there are fewer


def neighbour_votes(
    similarity: np.ndarray,
    candidate_labels: np.ndarray,
    categories: int,
    neighbours: int = NEIGHBOURS,
    temperature: float = TEMPERATURE,
) -> Votes:
    """Votes of each query's `neighbours` most similar candidates (similarity: queries x candidates),
    weighted by softmax(similarity / temperature) over those neighbours."""
    n, m = similarity.shape
    k = min(neighbours, m)
    votes = np.zeros((n, categories))
    chosen = np.full((n, neighbours), -1, dtype=np.int64)
    if k == 0 or n == 0:
        return Votes(votes, chosen)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    logits = similarity[rows, nearest] / temperature
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    np.add.at(votes, (np.broadcast_to(rows, nearest.shape), candidate_labels[nearest]), weights)
    chosen[:, :k] = nearest
    return Votes(votes, chosen)


@dataclass(frozen=True)
class LabelTransfer:
    scores: np.ndarray  # products x categories: retrieval scores + weight x votes
    folds: np.ndarray  # the fold of each product
    neighbours: np.ndarray  # products x k: indices of the products that voted, -1 for none
    weights: dict[int, float]  # the vote weight chosen for each fold (on the other folds)


def _held_out_votes(
    vectors: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    queries: np.ndarray,
    excluded: set[int],
    categories: int,
    **voting: float,
) -> Votes:
    """Votes for the products `queries` (a bool mask) from products outside `excluded` folds; `voting`:
    neighbour_votes' neighbours and temperature."""
    candidates = ~np.isin(folds, list(excluded))
    similarity = vectors[queries] @ vectors[candidates].T
    result = neighbour_votes(similarity, labels[candidates], categories, **voting)
    # Map candidate-relative indices back to product rows.
    rows = np.flatnonzero(candidates)
    mapped = np.where(result.neighbours >= 0, rows[np.clip(result.neighbours, 0, None)], -1)
    return Votes(result.votes, mapped)


def _hf1(scores: np.ndarray, labels: np.ndarray, paths: Sequence[str]) -> float:
    predicted = [paths[i] for i in np.argmax(scores, axis=1)]
    return hierarchical_prf(predicted, [paths[i] for i in labels]).f1


def transfer_labels(
    retrieval_scores: np.ndarray,
    vectors: np.ndarray,
    labels: Sequence[int],
    folds: np.ndarray,
    paths: Sequence[str],
    vote_weights: Sequence[float] = VOTE_WEIGHTS,
    neighbours: int = NEIGHBOURS,
    temperature: float = TEMPERATURE,
    scored: np.ndarray | None = None,
) -> LabelTransfer:
    """Cross-validated label transfer. `vectors` are unit-length product vectors, `labels` each
    product's category (a column of `retrieval_scores`, a path in `paths`). `scored` (a bool mask, default
    all): the products whose hF1 chooses the vote weights; the others (reviewers' corrections) only vote,
    under the same fold rule, so their rows of the returned scores mean nothing."""
    voting = {"neighbours": neighbours, "temperature": temperature}
    labels = np.asarray(labels, dtype=np.int64)
    n, categories = retrieval_scores.shape
    scored = np.ones(n, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    if not (len(vectors) == len(labels) == len(folds) == len(scored) == n) or len(paths) != categories:
        raise ValueError(
            f"label transfer: {n} x {categories} scores, {len(vectors)} vectors, {len(labels)} labels, "
            f"{len(folds)} folds and {len(paths)} paths do not line up"
        )
    scores = np.array(retrieval_scores, dtype=np.float64)
    voters = np.full((n, neighbours), -1, dtype=np.int64)
    chosen: dict[int, float] = {}
    fold_ids = sorted(set(folds.tolist()))
    for held_out in fold_ids:
        test = folds == held_out
        train = ~test & scored
        # Inner cross-validation on the training folds: each votes from the remaining ones.
        inner = np.zeros((n, categories))
        for other in fold_ids:
            if other != held_out:
                inner[folds == other] = _held_out_votes(
                    vectors, labels, folds, folds == other, {held_out, other}, categories, **voting
                ).votes
        quality = [
            _hf1(retrieval_scores[train] + weight * inner[train], labels[train], paths) for weight in vote_weights
        ]
        weight = float(vote_weights[int(np.argmax(quality))])  # ties: the smallest weight, listed first
        outer = _held_out_votes(vectors, labels, folds, test, {held_out}, categories, **voting)
        scores[test] += weight * outer.votes
        voters[test] = outer.neighbours
        chosen[held_out] = weight
    return LabelTransfer(scores, folds, voters, chosen)


def transfer_to_unlabelled(
    scores: np.ndarray,
    vectors: np.ndarray,
    pool_scores: np.ndarray,
    pool_vectors: np.ndarray,
    pool_labels: Sequence[int],
    pool_folds: np.ndarray,
    paths: Sequence[str],
    neighbours: int = NEIGHBOURS,
    temperature: float = TEMPERATURE,
) -> tuple[np.ndarray, dict[int, float]]:
    """Label transfer onto products outside the labelled pool: every pooled product may vote, with the
    median of the vote weights that cross-validation on the pool alone chose (returned per fold)."""
    voting = {"neighbours": neighbours, "temperature": temperature}
    labels = np.asarray(pool_labels, dtype=np.int64)
    weights = transfer_labels(pool_scores, pool_vectors, labels, pool_folds, paths, **voting).weights
    weight = float(np.median(list(weights.values())))
    votes = neighbour_votes(vectors @ pool_vectors.T, labels, scores.shape[1], **voting).votes
    return scores + weight * votes, weights
