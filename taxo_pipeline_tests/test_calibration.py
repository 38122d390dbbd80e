"""Confidence calibration, precision at coverage and the review queue on cases computed by hand, and the
two views on a small real DuckDB file (the pipeline's own run of them: test_review_queue.py)."""

import math

import duckdb
import numpy as np
import pytest

from taxo_pipeline.classification.calibration import (
    METHODS,
    choose_method,
    cross_fitted,
    deciles,
    ece,
    features,
    fit,
    fit_calibration,
    isotonic,
    max_gap,
    predict,
)
from taxo_pipeline.classification.coverage import (
    correct_by_level,
    coverage_lines,
    coverage_table,
    held_out_rows,
    review_threshold,
    threshold_for_precision,
)
from taxo_pipeline.classification.review import needs_review, with_review
from taxo_pipeline.classification.shards import ShardRows, publish, refresh_view, shard_path, shard_table, write_shard
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.retrieval.neighbour_votes import assign_folds
from taxo_pipeline.warehouse.calibrations import HELD_OUT
from taxo_pipeline.warehouse.classifications import refresh_review_queue
from taxo_pipeline.warehouse.store import Warehouse, replace_rows
from taxo_pipeline.warehouse.views import coverage_sql

KEY = ResultKey("title-description", "m", "full-depth", None, "d1")

# --- reliability ----------------------------------------------------------------------------------------------


def test_deciles_are_equal_count_bins_and_ece_weighs_their_gaps():
    predicted, correct = np.array([0.8, 0.2, 0.6, 0.4]), np.array([1, 0, 1, 1])
    bins = deciles(predicted, correct, bins=2)  # {0.2, 0.4}: 0.3 vs 0.5; {0.6, 0.8}: 0.7 vs 1.0
    assert [(b["low"], b["high"], b["products"]) for b in bins] == [(0.2, 0.4, 2), (0.6, 0.8, 2)]
    assert [b["predicted"] for b in bins] == pytest.approx([0.3, 0.7])
    assert [b["observed"] for b in bins] == [0.5, 1.0]
    assert ece(bins) == pytest.approx(0.5 * 0.2 + 0.5 * 0.3) and max_gap(bins) == pytest.approx(0.3)
    # ten bins of 20 products: two each; 0.05, 0.15, ... 0.95 twice, one of each pair right
    predicted = np.repeat(np.arange(10) / 10 + 0.05, 2)
    bins = deciles(predicted, np.tile([1, 0], 10))
    assert len(bins) == 10 and {b["products"] for b in bins} == {2}
    assert ece(bins) == pytest.approx(np.mean(np.abs(np.arange(10) / 10 + 0.05 - 0.5)))


# --- fitting --------------------------------------------------------------------------------------------------


def _ranked(top1, margin, levels=3):
    path = " > ".join(["A", "B", "C"][:levels])
    return [[(path, float(t)), ("X", float(t - m))] for t, m in zip(top1, margin)]


def test_platt_scaling_recovers_the_accuracy_of_each_score_level():
    # 40 products at top-1 score 0.2 of which a quarter are right, 40 at 0.8 of which three quarters are
    f = features(_ranked(np.repeat([0.2, 0.8], 40), np.zeros(80)))
    correct = np.concatenate([np.arange(40) % 4 == 0, np.arange(40) % 4 != 0])
    for method in ("platt", "platt-depth", "isotonic"):
        params = fit(method, f, correct)
        assert predict(method, params, f.take(np.array([0, 40]))) == pytest.approx([0.25, 0.75], abs=0.01), method
    # a set that is always right stays finite and confident
    always = features(_ranked(np.linspace(0, 1, 20), np.zeros(20)))
    assert 0.9 < predict("platt", fit("platt", always, np.ones(20)), always.take(np.array([10])))[0] < 1.0


def test_the_depth_a_prediction_reaches_is_a_feature():
    # same scores; paths that stop at L2 are right a fifth of the time, full-depth ones four fifths
    ranked = _ranked(np.full(50, 0.5), np.full(50, 0.1), levels=2) + _ranked(np.full(50, 0.5), np.full(50, 0.1))
    correct = np.concatenate([np.arange(50) % 5 == 0, np.arange(50) % 5 != 0])
    f = features(ranked)
    assert list(f.levels[[0, 50]]) == [2, 3]
    assert predict("platt-depth", fit("platt-depth", f, correct), f.take(np.array([0, 50]))) == pytest.approx(
        [0.2, 0.8], abs=0.01)
    assert predict("platt", fit("platt", f, correct), f.take(np.array([0, 50]))) == pytest.approx([0.5, 0.5])


def test_pool_adjacent_violators_by_hand():
    x, y = isotonic(np.array([1.0, 2, 3, 4, 5]), np.array([0.0, 1, 0, 1, 1]))
    assert list(x) == [1, 2.5, 4.5] and list(y) == [0, 0.5, 1]  # 2 and 3 pool; 4 and 5 are equal
    x, y = isotonic(np.array([1.0, 1, 2]), np.array([1.0, 0, 1]))  # ties share a block
    assert list(x) == [1, 2] and list(y) == [0.5, 1]
    x, y = isotonic(np.array([3.0, 2, 1]), np.array([0.0, 0.5, 1]))  # decreasing: one block
    assert list(x) == [2] and list(y) == [0.5]


def test_temperature_scaling_finds_the_temperature_of_the_margin():
    # p = sigmoid(margin / T): with T = 0.1 / ln 3, margin 0.1 -> 3/4 and margin 0.2 -> 9/10
    f = features(_ranked(np.full(80, 0.9), np.repeat([0.1, 0.2], 40)))
    correct = np.concatenate([np.arange(40) % 4 != 0, np.arange(40) % 10 != 0])
    params = fit("temperature", f, correct)
    assert params["temperature"] == pytest.approx(0.1 / math.log(3), rel=0.04)  # the grid's step
    assert predict("temperature", params, f.take(np.array([0, 40]))) == pytest.approx([0.75, 0.9], abs=0.01)


def test_each_held_out_confidence_comes_from_a_fit_without_its_fold():
    rng = np.random.default_rng(1)
    ids, top1 = [f"p{i}" for i in range(60)], rng.random(60)
    f, correct = features(_ranked(top1, top1 / 2)), rng.random(60) < top1
    held_out, folds = cross_fitted("platt", ids, f, correct), assign_folds(ids)
    for fold in range(5):
        rows = folds == fold
        outside = fit("platt", f.take(~rows), correct[~rows])
        assert held_out[rows] == pytest.approx(predict("platt", outside, f.take(rows)))


def test_the_method_is_chosen_on_the_dev_rows_alone():
    rng = np.random.default_rng(2)
    ids, top1 = [f"p{i}" for i in range(120)], rng.random(120)
    f, correct, dev = features(_ranked(top1, top1 / 3)), (rng.random(120) < top1).astype(float), np.arange(120) < 60
    method, briers = choose_method(ids, f, correct, dev)
    assert set(briers) == set(METHODS) and briers[method] == min(briers.values())
    flipped = correct.copy()
    flipped[~dev] = 1 - flipped[~dev]  # the test rows' outcomes change nothing
    assert choose_method(ids, f, flipped, dev) == (method, briers)
    calibration, held_out = fit_calibration(ids, f, correct, dev)
    assert calibration.method == method and calibration.products == 120
    assert calibration.ece == pytest.approx(ece(deciles(held_out, correct)))
    assert calibration.confidence(f) == pytest.approx(predict(method, fit(method, f, correct), f))
    assert fit_calibration(ids, f, correct, dev, method="temperature")[0].method == "temperature"


# --- precision at coverage and the review threshold -----------------------------------------------------------

CONFIDENCE = np.array([0.9, 0.8, 0.8, 0.5, 0.4])
TRUTHS = ["A > B > C", "A > B > C", "A > B > C", "A > D > E", "F > G"]
PREDICTED = ["A > B > C", "A > B", "A > X > Y", "A > D > E", "F > G"]  # the L2 leaf F > G is exact
CORRECT = correct_by_level(PREDICTED, TRUTHS)


def test_levels_of_a_prediction_are_right_by_prefix():
    assert CORRECT.tolist() == [[True, True, True], [True, True, False], [True, False, False], [True, True, True],
                                [True, True, True]]  # fmt: skip
    assert correct_by_level([None, "A"], ["A > B", "A > B"]).tolist() == [[False] * 3, [True, False, False]]


def test_precision_at_coverage_by_hand():
    table = coverage_table(CONFIDENCE, CORRECT)
    assert [(r["threshold"], r["products"], r["coverage"]) for r in table] == [
        (0.9, 1, 0.2), (0.8, 3, 0.6), (0.5, 4, 0.8), (0.4, 5, 1.0)
    ]  # fmt: skip
    assert [r["precision_l2"] for r in table] == pytest.approx([1, 2 / 3, 3 / 4, 4 / 5])
    assert [r["precision_exact"] for r in table] == pytest.approx([1, 1 / 3, 2 / 4, 3 / 5])
    assert [r["precision_l1"] for r in table] == [1, 1, 1, 1]


def test_the_review_threshold_is_the_smallest_reaching_the_target_observed_and_promised():
    # accepted at each threshold: 0.9 -> 1 product (exact 1/1, mean confidence 0.9), 0.8 -> 3 (1/3, 2.5/3),
    # 0.5 -> 4 (2/4, 0.75), 0.4 -> 5 (3/5, 0.68)
    exact = CORRECT[:, 2]
    assert threshold_for_precision(CONFIDENCE, exact, 0.6) == 0.4  # 3/5 at 0.4 reaches it exactly
    assert threshold_for_precision(CONFIDENCE, exact, 0.55) == 0.4
    assert threshold_for_precision(CONFIDENCE, exact, 0.61) == 0.9  # 0.5 only gives 2/4
    # not monotone: 0.8 misses 0.5 (1/3) but 0.5 reaches it again (2/4), and the smaller wins
    assert threshold_for_precision(CONFIDENCE[:4], exact[:4], 0.5) == 0.5
    # every product right: the confidences bound it; 0.68 reaches 0.68 exactly (tolerance)
    right = np.ones(5, dtype=bool)
    assert threshold_for_precision(CONFIDENCE, right, 0.7) == 0.5 and threshold_for_precision(CONFIDENCE, right, 0.68) == 0.4
    assert threshold_for_precision(CONFIDENCE, exact, 0.95) is None  # right, but its confidence 0.9 promises less
    assert threshold_for_precision(CONFIDENCE, np.zeros(5, bool), 0.1) is None  # nothing right
    assert threshold_for_precision(np.array([]), np.array([], bool), 0.9) is None
    with pytest.raises(ValueError, match=r"target precision must be in \(0, 1\], got 1.5"):
        threshold_for_precision(CONFIDENCE, exact, 1.5)


def test_the_run_summary_says_what_a_threshold_accepts():
    catalogue = np.array([0.95, 0.5, 0.45, np.nan])
    assert coverage_lines(CONFIDENCE, CORRECT, catalogue, (0.5, 0.61, 0.95)) == [
        "at confidence >= 0.40: 75% of products, expected precision 0.60 (target 0.50)",  # 3/5 at 0.4
        "at confidence >= 0.90: 25% of products, expected precision 1.00 (target 0.61)",
        "no confidence threshold reaches precision 0.95 on the held-out products: every product needs review",
    ]
    assert coverage_lines(CONFIDENCE, np.zeros((5, 3), bool), catalogue, (0.9,)) == [
        "no confidence threshold reaches precision 0.90 on the held-out products: every product needs review"
    ]


def test_needs_review_against_its_threshold():
    confidence = np.array([0.9, 0.5, 0.49, np.nan])
    assert needs_review(confidence, 0.5, 0.8).tolist() == [False, False, True, True]
    assert needs_review(confidence, None, 0.99).tolist() == [True] * 4  # no threshold reaches the target
    assert needs_review(confidence, 0.5, None) is None  # no target: no flag


# --- the views on a real DuckDB file --------------------------------------------------------------------------


def test_the_coverage_view_and_review_threshold_read_the_held_out_rows(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    other = ResultKey("text-retrieval", "m", "full-path", None, "d1")
    ids = [f"p{i}" for i in range(5)]
    with warehouse.transaction() as con:
        replace_rows(con, HELD_OUT, KEY.columns, held_out_rows(KEY, ids, CONFIDENCE, CORRECT))
        replace_rows(con, HELD_OUT, other.columns, held_out_rows(other, ids[:2], np.array([0.3, 0.2]), CORRECT[:2]))
        con.execute(f"CREATE VIEW precision_at_coverage AS {coverage_sql(HELD_OUT)}")
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        rows = con.execute("SELECT threshold, products, coverage, precision_l1, precision_l2, precision_exact "
                           "FROM precision_at_coverage WHERE approach = 'title-description'").fetchall()  # fmt: skip
        other_rows = con.execute(
            "SELECT count(*) FROM precision_at_coverage WHERE approach = 'text-retrieval'").fetchone()
    expected = [tuple(r.values()) for r in coverage_table(CONFIDENCE, CORRECT)]
    assert [tuple(pytest.approx(v) for v in row) for row in rows] == expected
    assert other_rows == (2,)
    assert review_threshold(warehouse, KEY, 0.6) == 0.4 and review_threshold(warehouse, KEY, 0.61) == 0.9
    assert review_threshold(warehouse, other, 0.3) == 0.3  # at 0.2: 1/2 right, mean confidence 0.25
    with pytest.raises(InputError, match="no held-out confidences of reranking"):
        review_threshold(warehouse, ResultKey("reranking", "m", "full-path", "r", "d1"), 0.9)


def test_the_review_queue_lists_flagged_products_least_confident_first_with_why_they_stop(tmp_path):
    warehouse, data = Warehouse(tmp_path / "w.duckdb"), tmp_path / "data"
    taxonomy = ["A", "A > B", "A > B > C", "A > B > D", "E", "E > F"]  # E > F is a leaf at L2
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE taxonomy_trimmed AS SELECT unnest(?) AS path", [taxonomy])
    ranked = [
        [("A > B > C", 0.9), ("A > B", 0.5)],  # confident: not queued
        [("A > B", 0.6), ("A > B > D", 0.55), ("E", 0.2)],  # stops at L2, a child in the top-k
        [("A", 0.4), ("E", 0.3)],  # stops at L1, no child in the top-k
        [("E > F", 0.3), ("A", 0.29)],  # a leaf at L2: complete
        [],  # no prediction
        [("A > B > C", 0.35), ("A", 0.2)],
    ]
    ids = ["ok", "l2", "l1", "leaf", "none", "c2"]
    confidence = np.array([0.9, 0.3, 0.2, 0.3, np.nan, 0.25])
    rows = ShardRows(ids, ranked, confidence, [None, None, None, None, "no text", None])
    table = with_review(shard_table(KEY, "cat", "f", 0, rows), threshold=0.5, target_precision=0.9)
    assert table["needs_review"].to_pylist() == [False, True, True, True, True, True]
    directory = data / "classifications" / "cat" / "run"
    write_shard(shard_path(directory, 0), table, "s", "r")
    assert publish(directory, ["s"], "r", "c") is not None  # the view shows published catalogues only
    refresh_view(warehouse, data)
    refresh_review_queue(warehouse)
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        queue = con.execute("SELECT product_id, levels, category_products, stop_reason FROM review_queue").fetchall()
    assert queue == [
        ("none", 0, 0, "no prediction: no text"),
        ("l1", 1, 1, "stopped at L1: no L2 category below it scored above it (0.400); none is among its top 2 "
                     "candidates"),
        ("c2", 3, 1, None),
        ("l2", 2, 1, "stopped at L2: no L3 category below it scored above it (0.600); the best, A > B > D, scored "
                     "0.550"),
        ("leaf", 2, 1, None),  # same confidence as l2, same category size: by product id
    ]  # fmt: skip
