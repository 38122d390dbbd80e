"""The improved classifiers' algorithms on small hand-computed cases: exact search, richer queries,
score fusion, the hierarchical cascade and cross-validated label transfer."""

import numpy as np
import pytest

from taxo_pipeline.retrieval.cascade import Hierarchy, hard_cascade, node_scores, path_scores, subtree_max
from taxo_pipeline.retrieval.exact_search import cosine_scores, normalise, top_k
from taxo_pipeline.retrieval.fusion import ScoreSource, fuse, standardise
from taxo_pipeline.retrieval.neighbour_votes import (
    assign_folds,
    fold_of,
    neighbour_votes,
    transfer_labels,
    transfer_to_unlabelled,
)
from taxo_pipeline.retrieval.queries import title_and_description

# A two-branch taxonomy in the L3 table's shape: every ancestor is a node too.
PATHS = ["A", "A > x", "A > x > 1", "B", "B > y", "B > y > 1"]


def test_cosine_scores_and_top_k():
    scores = cosine_scores(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]]))
    np.testing.assert_allclose(scores, [[1.0, 0.0, np.sqrt(0.5)]], atol=1e-6)
    assert top_k(scores, ["a", "b", "c"], 2) == [[("a", pytest.approx(1.0)), ("c", pytest.approx(0.7071, abs=1e-4))]]
    # ties keep column order; k larger than the candidates returns them all
    assert [c for c, _ in top_k(np.array([[0.5, 0.9, 0.5]]), ["a", "b", "c"], 5)[0]] == ["b", "a", "c"]


def test_normalise_leaves_a_zero_vector_zero():
    np.testing.assert_allclose(normalise(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


def test_title_and_description_puts_the_title_first():
    assert title_and_description("Straw hat", "Woven by hand.") == "Straw hat. Woven by hand."
    assert title_and_description("Sale!", "Two for one.") == "Sale! Two for one."
    assert title_and_description(" Straw hat ", "") == "Straw hat"
    assert title_and_description(None, "Only a description.") == "Only a description."


def test_standardise_and_weighted_fusion():
    np.testing.assert_allclose(standardise(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])), [[-1.2247, 0, 1.2247], [0, 0, 0]], atol=1e-4)
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[30.0, 20.0, 10.0]])  # b is a on another scale, reversed
    # 0.75 z(a) + 0.25 z(b) = 0.5 z(a): the scale of b does not matter, only its weight
    np.testing.assert_allclose(fuse([ScoreSource("a", a, 0.75), ScoreSource("b", b, 0.25)]), [[-0.6124, 0, 0.6124]], atol=1e-4)
    np.testing.assert_allclose(fuse([ScoreSource("a", a, 1), ScoreSource("b", b, 1)]), [[0, 0, 0]], atol=1e-12)


def test_fusion_falls_back_to_the_sources_a_product_has():
    text = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    image = np.array([[0.0, 9.0, 0.0], [0.0, 0.0, 0.0]])  # only the first product has an image
    fused = fuse([ScoreSource("text", text), ScoreSource("image", image, present=np.array([True, False]))])
    np.testing.assert_allclose(fused[1], standardise(text)[1])  # no image: its text scores alone
    np.testing.assert_allclose(fused[0], (standardise(text)[0] + standardise(image)[0]) / 2)
    assert np.argmax(fused[0]) == 1 and np.argmax(text[0]) == 2  # the image moved the first product
    with pytest.raises(ValueError, match="no score source"):
        fuse([ScoreSource("image", image, present=np.array([True, False]))])


def test_hierarchy_and_subtree_max():
    h = Hierarchy.from_paths(PATHS)
    assert h.parent.tolist() == [-1, 0, 1, -1, 3, 4] and h.depth.tolist() == [1, 2, 3, 1, 2, 3]
    scores = np.array([[0.2, 0.1, 0.8, 0.6, 0.6, 0.7]])
    np.testing.assert_allclose(subtree_max(scores, h), [[0.8, 0.8, 0.8, 0.7, 0.7, 0.7]])
    with pytest.raises(ValueError, match="no parent node 'C'"):
        Hierarchy.from_paths(["A", "C > z"])


def test_cascade_picks_the_branch_with_the_best_aggregated_score():
    h = Hierarchy.from_paths(PATHS)
    # A's subtree holds the single best leaf (0.8), but B is strong at every level.
    scores = np.array([[0.2, 0.2, 0.8, 0.6, 0.6, 0.7]])
    assert PATHS[int(np.argmax(scores))] == "A > x > 1"  # flat retrieval follows the lone leaf
    aggregated = node_scores(scores, h)  # 0.5 own + 0.5 subtree max
    np.testing.assert_allclose(aggregated, [[0.5, 0.5, 0.8, 0.65, 0.65, 0.7]])
    assert PATHS[hard_cascade(aggregated, h)[0]] == "B > y > 1"  # L1: B (0.65 > 0.5), then down B
    # path scores: means of the aggregated scores along each path
    np.testing.assert_allclose(path_scores(aggregated, h), [[0.5, 0.5, 0.6, 0.65, 0.65, 2.0 / 3]])


def test_soft_rule_undoes_an_early_mistake_of_the_hard_cascade():
    h = Hierarchy.from_paths(PATHS)
    # A's own document looks best at L1 (0.6) but nothing under it fits; B fits below L1.
    aggregated = node_scores(np.array([[0.6, 0.1, 0.3, 0.4, 0.7, 0.7]]), h)
    np.testing.assert_allclose(aggregated, [[0.6, 0.2, 0.3, 0.55, 0.7, 0.7]])
    assert PATHS[hard_cascade(aggregated, h)[0]] == "A > x > 1"
    soft = path_scores(aggregated, h)  # A > x > 1: (0.6 + 0.2 + 0.3) / 3; B > y > 1: (0.55 + 0.7 + 0.7) / 3
    np.testing.assert_allclose(soft[0, [2, 5]], [1.1 / 3, 0.65])
    assert PATHS[int(np.argmax(soft))] == "B > y > 1"


def test_neighbour_votes_hand_computed():
    similarity = np.array([[0.9, 0.8, 0.1]])
    weights = np.exp([9.0, 8.0]) / np.exp([9.0, 8.0]).sum()  # softmax(sim / 0.1) over the 2 nearest
    votes = neighbour_votes(similarity, np.array([1, 2, 0]), categories=3, neighbours=2, temperature=0.1)
    np.testing.assert_allclose(votes.votes, [[0.0, weights[0], weights[1]]])
    assert votes.neighbours.tolist() == [[0, 1]]
    same_label = neighbour_votes(similarity, np.array([2, 2, 0]), categories=3, neighbours=2, temperature=0.1)
    np.testing.assert_allclose(same_label.votes, [[0.0, 0.0, 1.0]])


def test_folds_are_deterministic_disjoint_and_cover_every_product():
    ids = [f"train-{i}" for i in range(200)]
    folds = assign_folds(ids)
    assert assign_folds(list(reversed(ids))).tolist() == list(reversed(folds.tolist()))  # row order does not matter
    assert fold_of("train-7") == folds[7]
    members = [set(np.flatnonzero(folds == f)) for f in range(5)]
    assert all(members) and sum(map(len, members)) == 200 and set().union(*members) == set(range(200))
    assert all(not (members[a] & members[b]) for a in range(5) for b in range(a + 1, 5))


def test_label_transfer_never_uses_a_product_or_its_fold_as_neighbour():
    rng = np.random.default_rng(0)
    # pairs of identical products: a product's nearest other product is its twin, whatever the fold
    vectors = normalise(np.repeat(rng.normal(size=(30, 16)), 2, axis=0))
    labels = np.repeat(np.arange(30), 2)
    paths = [f"C{i}" for i in range(30)]
    folds = assign_folds([f"p{i}" for i in range(60)])
    result = transfer_labels(np.zeros((60, 30)), vectors, labels, folds, paths)
    for row, neighbours in enumerate(result.neighbours):
        used = neighbours[neighbours >= 0]
        assert len(used) == 10 and row not in used
        assert not np.any(folds[used] == folds[row])
        twin = row ^ 1
        assert (used[0] == twin) == (folds[twin] != folds[row])  # the twin votes first only across folds


def test_vote_weight_is_chosen_inside_the_training_folds():
    rng = np.random.default_rng(1)
    n, categories = 60, 3
    paths = ["A", "B", "C"]
    labels = np.arange(n) % categories
    folds = assign_folds([f"p{i}" for i in range(n)])
    # products of a category share a direction, so neighbours carry the label
    centres = normalise(rng.normal(size=(categories, 8)))
    vectors = normalise(centres[labels] + 0.1 * rng.normal(size=(n, 8)))
    useless = rng.normal(size=(n, categories))  # retrieval knows nothing
    helped = transfer_labels(useless, vectors, labels, folds, paths)
    assert min(helped.weights.values()) > 0
    assert np.mean(np.argmax(helped.scores, axis=1) == labels) > 0.9
    # perfect retrieval and neighbours that say nothing: no vote weight beats 0, so 0 is kept
    perfect = np.eye(categories)[labels] * 10.0
    ignored = transfer_labels(perfect, normalise(rng.normal(size=(n, 8))), labels, folds, paths)
    assert set(ignored.weights.values()) == {0.0}
    np.testing.assert_allclose(ignored.scores, perfect)


def test_label_transfer_takes_its_neighbours_and_temperature():
    rng = np.random.default_rng(2)
    vectors = normalise(rng.normal(size=(40, 8)))
    folds = assign_folds([f"p{i}" for i in range(40)])
    result = transfer_labels(np.zeros((40, 4)), vectors, np.arange(40) % 4, folds, ["A", "B", "C", "D"], neighbours=3)
    assert result.neighbours.shape == (40, 3) and np.all(result.neighbours >= 0)


def test_transfer_to_unlabelled_products_weighs_votes_by_the_pool_alone():
    rng = np.random.default_rng(3)
    categories, paths = 3, ["A", "B", "C"]
    centres = normalise(rng.normal(size=(categories, 8)))
    pool_labels = np.arange(60) % categories
    pool_vectors = normalise(centres[pool_labels] + 0.1 * rng.normal(size=(60, 8)))
    pool_folds = assign_folds([f"p{i}" for i in range(60)])
    new_labels = np.arange(9) % categories
    new_vectors = normalise(centres[new_labels] + 0.1 * rng.normal(size=(9, 8)))
    useless = rng.normal(size=(69, categories))
    scores, weights = transfer_to_unlabelled(
        useless[60:], new_vectors, useless[:60], pool_vectors, pool_labels, pool_folds, paths
    )
    assert sorted(weights) == sorted(set(pool_folds.tolist())) and min(weights.values()) > 0
    assert np.argmax(scores, axis=1).tolist() == new_labels.tolist()
    # a pool whose neighbours say nothing gets weight 0: the new products keep their retrieval scores
    perfect = np.eye(categories)[pool_labels] * 10.0
    noise = normalise(rng.normal(size=(60, 8)))
    kept, weights = transfer_to_unlabelled(useless[60:], new_vectors, perfect, noise, pool_labels, pool_folds, paths)
    assert set(weights.values()) == {0.0}
    np.testing.assert_allclose(kept, useless[60:])
