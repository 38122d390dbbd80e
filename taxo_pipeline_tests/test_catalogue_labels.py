"""A catalogue's own labels, without a model: which labels count (taxonomy nodes at the run's depth) and which
are reported by value, what cross-fitting chooses and reports on hand-made scores, the saved learning, and
how merchant and reviewer categories land in a shard's rows and the Shopify write-back."""

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from taxo_pipeline.approaches.label_transfer import CrossFit, label_shares, pooled_votes
from taxo_pipeline.approaches.spec import Voters
from taxo_pipeline.classification.catalogue_labels import (
    CatalogueLabels,
    label_at_depth,
    learn,
    load_learning,
    read_labels,
    refresh_learning_view,
    save_learning,
)
from taxo_pipeline.classification.review import accepted_categories, with_review
from taxo_pipeline.classification.shards import ShardRows, shard_table, write_shard
from taxo_pipeline.dataset.google_mapping import GoogleMapping
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.retrieval.neighbour_votes import neighbour_votes
from taxo_pipeline.warehouse.store import Warehouse

HOME, PLANTS = "Home & Garden", "Home & Garden > Plants"
FLOWERS, VASES = "Home & Garden > Plants > Flowers", "Home & Garden > Decor > Vases"
TAXONOMY = TrimmedTaxonomy.from_categories([HOME, PLANTS, FLOWERS, f"{FLOWERS} > Fresh Cut Flowers", "Home & Garden > Decor", VASES,
                                       "Uncategorized"])  # fmt: skip
KEY = ResultKey("label-transfer", "m", "full-depth")


def test_a_label_counts_when_it_is_a_taxonomy_node_once_trimmed_to_the_depth():
    nodes = set(TAXONOMY.paths)
    assert label_at_depth(f"{FLOWERS} > Fresh Cut Flowers", nodes, 3) == FLOWERS  # deeper: trimmed
    assert label_at_depth("Home & Garden>Plants >  Flowers", nodes, 3) == FLOWERS  # separators as merchants type them
    assert label_at_depth(HOME, nodes, 3) == HOME  # a top level is a node too
    assert label_at_depth("Uncategorized", nodes, 3) is None  # a node of the taxonomy, but no category
    assert label_at_depth("Hogar y jardín > Plantas", nodes, 3) is None  # localised
    assert label_at_depth("  ", nodes, 3) is None and label_at_depth(None, nodes, 3) is None


def test_read_labels_keeps_the_usable_labels_and_counts_the_others_by_value(tmp_path):
    catalogue = tmp_path / "catalogue.csv"
    pl.DataFrame({
        "product_id": ["a", "b", "c", "d", "e", "f"],
        "product_title": ["Roses", "Tulips", "Vase", "Mystery", "Gift card", "Lilies"],
        "product_description": ["Red roses.", "", "A glass vase.", "?", "A card.", "White lilies."],
        "category": [f"{FLOWERS} > Fresh Cut Flowers", FLOWERS, VASES, "Uncategorized", "Uncategorized", None],
    }).write_csv(catalogue)  # fmt: skip
    labels = read_labels(catalogue, 4, TAXONOMY)  # two shards
    assert labels.products.rows() == [("a", "Roses", "Red roses.", FLOWERS), ("b", "Tulips", "", FLOWERS),
                                      ("c", "Vase", "A glass vase.", VASES)]  # fmt: skip
    assert labels.unrecognised == {"Uncategorized": 2} and labels.count == 3
    assert labels.usable(["a", "d", "f"], [FLOWERS, "Uncategorized", None]) == [FLOWERS, None, None]
    assert labels.report()[1].startswith("2 labels are not taxonomy paths and were classified as unlabelled: 'Uncategorized' x2")


def _cross_fit() -> CrossFit:
    """Ten products in two folds and two candidate weight pairs: (0, 0) gets products 0-3 right, (1, 0) gets
    0-7 right; every wrong top-1 is category 1 (FLOWERS' neighbour in the paths)."""
    paths = TAXONOMY.paths
    flowers, vases = paths.index(FLOWERS), paths.index(VASES)
    labels = np.array([flowers] * 5 + [vases] * 5)
    top = np.zeros((10, 2, 2), dtype=np.int64)
    wrong = paths.index(PLANTS)
    for weight, right in ((0, 4), (1, 8)):
        top[:, weight, 0] = [labels[i] if i < right else wrong for i in range(10)]
        top[:, weight, 1] = wrong
    scores = np.zeros((10, 2, 2))
    scores[:, :, 0] = np.linspace(0.5, 2.0, 10)[:, None]
    ids = np.array([f"p{i}" for i in range(10)], dtype=object)
    return CrossFit(((0.0, 0.0, 1.0), (1.0, 0.0, 1.0)), labels, np.array([0, 1] * 5), top, scores, np.eye(10, 4), ids)


def test_learn_chooses_the_weights_on_the_other_folds_and_reports_the_held_out_figures():
    fit = _cross_fit()
    learned = learn(fit, [f"p{i}" for i in range(10)], TAXONOMY.paths)
    assert learned.weights == (1.0, 0.0, 1.0) and learned.fold_weights == {0: (1.0, 0.0, 1.0), 1: (1.0, 0.0, 1.0)}
    assert learned.correct[:, 2].tolist() == [True] * 8 + [False] * 2  # exact, at the fold's own choice
    assert learned.correct[:, 0].all()  # every prediction is under Home & Garden
    assert learned.figures()["exact_accuracy"] == 0.8 and learned.figures()["l1_accuracy"] == 1.0
    assert learned.labelled == 10 and np.all((learned.confidence >= 0) & (learned.confidence <= 1))


def test_a_tie_between_weights_goes_to_the_smallest():
    fit = _cross_fit()
    fit.top[:, 1] = fit.top[:, 0]  # both pairs now get the same products right
    assert learn(fit, [f"p{i}" for i in range(10)], TAXONOMY.paths).weights == (0.0, 0.0, 1.0)


def test_label_shares_are_the_catalogue_prior():
    assert label_shares(np.array([0, 2, 2, 2]), 4).tolist() == [0.25, 0.0, 0.75, 0.0]
    assert label_shares(np.array([], dtype=np.int64), 2).tolist() == [0.0, 0.0]


def test_saved_learning_is_read_back_only_under_the_same_fingerprint(tmp_path):
    labels = CatalogueLabels(pl.DataFrame({"product_id": ["a"], "product_title": ["t"], "product_description": ["d"],
                                           "ground_truth_category": [FLOWERS]}), {"Uncategorized": 3})  # fmt: skip
    learned = learn(_cross_fit(), [f"p{i}" for i in range(10)], TAXONOMY.paths)
    voters = Voters(np.eye(2, 3, dtype=np.float32), np.array([4, 1]), np.array(["a", "b"], dtype=object), 1.0, 0.5, 0.0)
    save_learning(tmp_path / "run", "fp1", labels, voters, learned, {"catalogue": "c", **KEY.columns, "products": "c.csv"})
    back_voters, back = load_learning(tmp_path / "run", "fp1")
    assert back_voters.labels.tolist() == [4, 1] and (back_voters.weight, back_voters.prior_weight, back_voters.pool_scale) == (1.0, 0.5, 0.0)
    assert np.array_equal(back_voters.vectors, voters.vectors) and back.weights == learned.weights
    assert back_voters.ids.tolist() == ["a", "b"]
    assert np.allclose(back.confidence, learned.confidence) and np.array_equal(back.correct, learned.correct)
    assert load_learning(tmp_path / "run", "fp2") is None and load_learning(tmp_path / "none", "fp1") is None
    record = json.loads((tmp_path / "run" / "learned.json").read_text())
    assert record["unrecognised_labels"] == [{"label": "Uncategorized", "products": 3}] and record["labelled"] == 1
    assert record["coverage"][-1]["coverage"] == 1.0 and record["coverage"][-1]["precision_exact"] == 0.8
    (tmp_path / "run" / "learned.json").write_text("{not json")  # unreadable: learned again, never a crash
    assert load_learning(tmp_path / "run", "fp1") is None
    save_learning(tmp_path / "run", "fp1", labels, voters, learned, {"catalogue": "c", **KEY.columns, "products": "c.csv"})

    warehouse = Warehouse(tmp_path / "w.duckdb")
    refresh_learning_view(warehouse, tmp_path)  # <root>/*/*/learned.json
    (tmp_path / "cat").mkdir()
    (tmp_path / "run").rename(tmp_path / "cat" / "run")
    refresh_learning_view(warehouse, tmp_path)
    with warehouse.connect(read_only=True) as con:
        row = con.execute("SELECT catalogue, labelled, exact_accuracy, vote_weight, unrecognised_labels[1].label, "
                          "coverage[-1].precision_exact FROM catalogue_learning").fetchone()  # fmt: skip
    assert row == ("c", 1, 0.8, 1.0, "Uncategorized", 0.8)


def test_merchant_and_reviewer_categories_are_kept_and_never_queued(tmp_path):
    ranked = [[(PLANTS, 0.9), (FLOWERS, 0.1)], [(VASES, 0.8)], [(FLOWERS, 0.7)], []]
    rows = ShardRows(["a", "b", "c", "d"], ranked, np.array([0.2, 0.95, 0.3, np.nan]), [None, None, None, "no text"])
    rows = rows.with_known([None, None, VASES, None], [FLOWERS, None, FLOWERS, None])  # c: a reviewer beats the merchant
    google = GoogleMapping({HOME: (536, "Home & Garden"), FLOWERS: (2, "Home & Garden > Plants > Flowers")})
    table = with_review(shard_table(KEY, "cat", "f", 0, rows, google), threshold=0.9, target_precision=0.9)
    assert table["category"].to_pylist() == [FLOWERS, VASES, VASES, None]
    assert table["category_source"].to_pylist() == ["merchant", "predicted", "reviewer", None]
    assert table["confidence"].to_pylist()[:3] == [1.0, 0.95, 1.0]
    assert table["needs_review"].to_pylist() == [False, False, False, True]
    assert table["reviewed"].to_pylist() == [False, False, True, False]
    assert table["google_category_id"].to_pylist() == [2, 536, 536, None]  # Vases: its nearest mapped ancestor
    assert table["top_k"].to_pylist()[0][0] == {"category": PLANTS, "score": 0.9}  # the model's own answer stays
    write_shard(tmp_path / "shard-00000.parquet", table, "s", "r")
    assert accepted_categories([tmp_path / "shard-00000.parquet"]) == {"b": VASES}  # predicted and accepted only
    assert pq.read_schema(tmp_path / "shard-00000.parquet").names[:9][-3:] == ["shard", "product_id", "category"]


@pytest.mark.parametrize("threshold, flagged", [(None, [True, True]), (0.5, [False, True])])
def test_predicted_products_follow_the_threshold(threshold, flagged):
    rows = ShardRows(["a", "b"], [[(PLANTS, 1.0)], [(PLANTS, 0.1)]], np.array([0.8, 0.2]), [None, None]).with_known([None, None])
    table = with_review(shard_table(KEY, "cat", "f", 0, rows), threshold=threshold, target_precision=0.9)
    assert table["needs_review"].to_pylist() == flagged and table["google_category_id"].to_pylist() == [None, None]


def test_pooled_votes_never_let_a_member_vote_for_a_query_with_its_key():
    pool = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = np.array([0, 1, 2])
    query = pool[:1]  # the first member itself (a product and its own correction, or its own fold)
    free = pooled_votes(query, pool, labels, 3, neighbours=2)
    assert free[0].argmax() == 0 and free[0, 2] == 0.0  # its own label leads; the farthest member is not a neighbour
    own = pooled_votes(query, pool, labels, 3, neighbours=2, keys=(np.array(["a"]), np.array(["a", "b", "c"])))
    assert own[0, 0] == 0.0 and own[0, 1] > own[0, 2] > 0 and own[0].sum() == pytest.approx(1.0)
    alone = pooled_votes(query, pool, labels, 3, keys=(np.array([0]), np.array([0, 0, 0])))
    assert alone.tolist() == [[0.0, 0.0, 0.0]]  # every member excluded: no votes, and no NaN
    queries = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(pooled_votes(queries, pool, labels, 3, neighbours=2),
                       neighbour_votes(queries @ pool.T, labels, 3, neighbours=2).votes)  # fmt: skip
