"""Evaluation = classify the labelled products with an approach, store the top-k, then score the top-1
against the ground truth. Plain functions: the Dagster assets and the commands call these."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from taxo_pipeline.approaches.spec import L1, Approach, Classified, ClassifyRequest
from taxo_pipeline.evaluation.keys import ResultKey, product_set_fingerprint
from taxo_pipeline.evaluation.metrics import evaluate_l1, evaluate_paths
from taxo_pipeline.evaluation.protocol import TEST, split_of
from taxo_pipeline.evaluation.store import latency, save_metrics, save_results
from taxo_pipeline.warehouse.results import FULL, dataset_depth, latency_per_product, top1_with_truth
from taxo_pipeline.warehouse.store import Warehouse


@dataclass(frozen=True)
class Stored:
    key: ResultKey  # with the dataset the predictions cover
    classified: Classified
    rows: int


def classify_and_store(
    warehouse: Warehouse, approach: Approach, key: ResultKey, request: ClassifyRequest, full: bool, model_fingerprint: str
) -> Stored:
    """Classify `request.products`, then replace the key's predictions and latencies for that product
    set (`full`: the whole evaluation table, else a subset such as --limit's) in one transaction, with the
    fingerprint of the model settings they are computed with (publication.settings_fingerprint, taken
    before classifying)."""
    classified = approach.classify(request)
    depth = request.taxonomy.depth
    key = key.on(product_set_fingerprint(request.products, depth))
    rows = save_results(
        warehouse, key, classified.product_ids, classified.ranked, request.evidence.requests,
        products=request.products.height, scope=FULL if full else "subset", depth=depth,
        model_fingerprint=model_fingerprint,
    )  # fmt: skip
    return Stored(key, classified, rows)


@dataclass(frozen=True)
class Scored:
    result: dict  # the reference's strict/lenient blocks
    count: int
    latency: dict
    evaluation: str  # how the figures were obtained (the metrics' `evaluation` column)


# How a fine-tuned model's figures are obtained: it learnt from the protocol's dev part, so only the test part counts.
TEST_PART_ONLY = "test part only (fine-tuned on the dev part)"


def score_and_store(warehouse: Warehouse, approach: Approach, key: ResultKey, l1_labels: list[str],
                    test_part_only: bool = False) -> Scored | None:  # fmt: skip
    """Score the key's stored top-1 and replace its metrics; None when it has no predictions to score
    (e.g. no product has an image): no figures rather than zeros. `test_part_only`: score the protocol's
    test part alone, for a model trained on its dev part."""
    scored = top1_with_truth(warehouse, key)
    if test_part_only:
        scored = scored.filter(pl.Series([split_of(p) == TEST for p in scored["product_id"].to_list()], dtype=pl.Boolean))
    if scored.height == 0:
        return None
    predictions = scored["prediction"].to_list()
    truths = scored["ground_truth_category"].to_list()
    potentials = scored["potential_product_categories"].to_list()
    depth = dataset_depth(warehouse, key.dataset)
    if approach.headline == L1:
        result = evaluate_l1(predictions, truths, potentials, l1_labels)
    else:
        result = evaluate_paths(predictions, truths, potentials, depth)
    latency_block = {**latency(warehouse, key, approach.stage),
                     "per_product": latency_per_product(warehouse, key, scored.height)}  # fmt: skip
    evaluation = f"{approach.evaluation}, {TEST_PART_ONLY}" if test_part_only else approach.evaluation
    save_metrics(warehouse, key, result, scored.height, latency_block, evaluation, approach.headline, depth)
    return Scored(result, scored.height, latency_block, evaluation)


def headline(result: dict, mode: str) -> float:
    """The figure the leaderboard ranks by: hierarchical F1, or the L1 F1 of L1-only results."""
    block = result[mode]
    return block["f1"] if "f1" in block else block["hierarchical"]["f1"]
