"""Precision at coverage: accept the predictions whose confidence is at least a threshold, and send the
rest to a person. For each threshold (every held-out confidence value), the share of products it
accepts and the precision of those at L1, L2 and the exact path at the evaluation depth (L3 by default),
computed from the held-out (cross-fitted) confidences of the labelled products, so a figure never
comes from a calibrator that saw the product.

The review threshold for a target precision P is the smallest threshold whose accepted products reach P
on the exact path both ways the held-out rows can say it: their observed precision, and their mean
calibrated confidence (what the calibration promises them). Observed precision alone picks, of the many
thresholds tried, the one that sampling flattered most, so on unseen products it falls short of P
(bench/review_rule.py, on synthetic calibrated and over-confident scores, no labelled row read: 0.79-0.89
delivered for a target of 0.90; with the promise as well, 0.89-0.93). When no threshold reaches P (not
even the most confident products alone), there is none, and every product needs review.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from taxo_pipeline.dataset.taxonomy import SEPARATOR
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.warehouse.calibrations import held_out_confidences
from taxo_pipeline.warehouse.store import Warehouse

LEVELS = ("l1", "l2", "exact")
TARGETS = (0.8, 0.9, 0.95)  # what classify-products reports when no --target-precision is given


def prefix(path: str, level: int) -> str:
    return SEPARATOR.join(path.split(SEPARATOR)[:level])


def correct_by_level(predicted: Sequence[str | None], truths: Sequence[str]) -> np.ndarray:
    """products x (L1, L2, exact): the prediction's first k levels equal the truth's (a path that stops
    above level k counts as wrong there, unless the truth stops there too); exact: the whole path."""
    rows = [
        (p is not None and prefix(p, 1) == prefix(t, 1), p is not None and prefix(p, 2) == prefix(t, 2), p == t)
        for p, t in zip(predicted, truths, strict=True)
    ]
    return np.array(rows, dtype=bool).reshape(len(rows), len(LEVELS))


def _accepted(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct confidence, most confident first: the threshold, the products at or above it, and
    their precision per column of `correct`."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    conf, hits = np.asarray(confidence, dtype=np.float64)[order], np.cumsum(np.asarray(correct)[order], axis=0)
    last = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))  # the last row of each run of ties
    return conf[last], last + 1, hits[last] / (last + 1)[:, None]


def coverage_table(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """The rows of the precision_at_coverage view for one key (`correct` as correct_by_level gives it)."""
    thresholds, products, precision = _accepted(confidence, correct)
    return [
        {"threshold": float(t), "products": int(n), "coverage": float(n / len(confidence)),
         **{f"precision_{level}": float(p) for level, p in zip(LEVELS, row)}}
        for t, n, row in zip(thresholds, products, precision)
    ]  # fmt: skip


def threshold_for_precision(confidence: np.ndarray, correct_exact: np.ndarray, target: float) -> float | None:
    """The smallest threshold whose accepted products reach `target` in exact precision and in mean
    confidence; None if none does."""
    if not 0 < target <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    if len(confidence) == 0:
        return None
    confidence = np.asarray(confidence, dtype=np.float64)
    observed_and_promised = np.column_stack([np.asarray(correct_exact, dtype=np.float64), confidence])
    thresholds, _, precision = _accepted(confidence, observed_and_promised)
    reaching = thresholds[precision.min(axis=1) >= target - 1e-12]  # tolerance: 9/10 must reach 0.9
    return float(reaching.min()) if len(reaching) else None


def held_out_rows(key: ResultKey, product_ids: Sequence[str], confidence: np.ndarray, correct: np.ndarray) -> pa.Table:
    return pa.table({
        **{c: pa.array([v] * len(product_ids), pa.string()) for c, v in key.columns.items()},
        "product_id": pa.array(list(product_ids), pa.string()),
        "confidence": pa.array(confidence, pa.float64()),
        **{f"correct_{level}": pa.array(correct[:, j], pa.bool_()) for j, level in enumerate(LEVELS)},
    })  # fmt: skip


def held_out(warehouse: Warehouse, key: ResultKey, published: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The key's held-out confidences and their correct_by_level rows, as the metrics asset stored them:
    the published ones (what classify-products and the service use with the published calibration), or
    with `published=False` the working rows (the metrics asset's own metadata)."""
    rows = held_out_confidences(warehouse, key, published)
    confidence = np.array([r[0] for r in rows], dtype=np.float64)
    return confidence, np.array([r[1:] for r in rows], dtype=bool).reshape(len(rows), len(LEVELS))


def review_threshold(warehouse: Warehouse, key: ResultKey, target_precision: float) -> float | None:
    """The confidence below which a product of `key`'s classifier needs review to keep `target_precision`
    exact precision on the accepted ones (held-out figures); None if no threshold reaches it."""
    confidence, correct = held_out(warehouse, key)
    if len(confidence) == 0:
        raise InputError(f"no held-out confidences of {key} in {warehouse.path}: run `taxo-pipeline materialize` first")
    return threshold_for_precision(confidence, correct[:, 2], target_precision)


def expected_at(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> float:
    """Held-out exact precision of the products at or above `threshold` (nan if none)."""
    accepted = confidence >= threshold
    return float(correct[accepted, 2].mean()) if accepted.any() else float("nan")


def coverage_lines(
    confidence: np.ndarray, correct: np.ndarray, catalogue: np.ndarray, targets: Sequence[float]
) -> list[str]:
    """Per target precision, what a threshold means for this catalogue's products (`catalogue`: their
    confidences, nan for a product without a prediction)."""
    lines = []
    for target in targets:
        threshold = threshold_for_precision(confidence, correct[:, 2], target)
        if threshold is None:
            lines.append(f"no confidence threshold reaches precision {target:.2f} on the held-out products: "
                         "every product needs review")  # fmt: skip
            continue
        share = float(np.mean(np.nan_to_num(catalogue, nan=-1.0) >= threshold)) if len(catalogue) else 0.0
        lines.append(f"at confidence >= {threshold:.2f}: {share:.0%} of products, expected precision "
                     f"{expected_at(confidence, correct, threshold):.2f} (target {target:.2f})")  # fmt: skip
    return lines
