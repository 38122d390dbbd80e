"""Calibrated confidence: the probability that a product's top-1 category is right, from its top-1
score and the margin to the top-2, by Platt scaling (a two-feature logistic regression) fitted on
an approach's stored predictions for the labelled evaluation set. Checked on held-out folds: per
confidence bin, the mean predicted probability next to the observed accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from taxo_pipeline.retrieval.label_transfer import assign_folds

BINS = 5
RIDGE = 1e-3  # keeps the fit finite when the classes separate (a tiny set, all right or all wrong)


@dataclass(frozen=True)
class Calibration:
    weights: tuple[float, float]  # top-1 score, margin to the top-2
    bias: float
    products: int  # labelled products it was fitted on
    accuracy: float  # their top-1 accuracy
    reliability: tuple[dict, ...] = ()  # held-out bins: low, high, products, predicted, observed

    def confidence(self, top1: np.ndarray, margin: np.ndarray) -> np.ndarray:
        return _sigmoid(np.column_stack([top1, margin]) @ np.array(self.weights) + self.bias)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(tuple(data["weights"]), data["bias"], data["products"], data["accuracy"], tuple(data["reliability"]))


def features(ranked: Sequence[Sequence[tuple[str, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 score and margin to the top-2 (0 with one candidate) per product."""
    top1 = np.array([r[0][1] if r else 0.0 for r in ranked], dtype=np.float64)
    second = np.array([r[1][1] if len(r) > 1 else (r[0][1] if r else 0.0) for r in ranked], dtype=np.float64)
    return top1, top1 - second


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # never overflows


def _fit(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method on standardised features; returns weights for raw x plus bias."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    beta = np.zeros(design.shape[1])
    penalty = RIDGE * len(x) * np.diag([1.0] * (design.shape[1] - 1) + [0.0])
    for _ in range(iterations):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = beta[:-1] / scale
    return np.append(weights, beta[-1] - weights @ mean)


def reliability(predicted: np.ndarray, correct: np.ndarray, bins: int = BINS) -> tuple[dict, ...]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
    return tuple(
        {"low": float(edges[b]), "high": float(edges[b + 1]), "products": int(np.count_nonzero(which == b)),
         "predicted": float(predicted[which == b].mean()), "observed": float(correct[which == b].mean())}
        for b in range(bins) if np.any(which == b)
    )  # fmt: skip


def fit_calibration(
    product_ids: Sequence[str], top1: np.ndarray, margin: np.ndarray, correct: np.ndarray, folds: int = 5
) -> Calibration:
    """Fit on every product; the reliability table comes from out-of-fold fits (by product-id hash)."""
    x, y = np.column_stack([top1, margin]).astype(np.float64), np.asarray(correct, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("calibration needs at least one labelled prediction")
    held_out = np.empty(len(y))
    fold = assign_folds(list(product_ids), folds) if len(y) >= 2 * folds else np.zeros(len(y), dtype=np.int64)
    for f in np.unique(fold):
        test = fold == f
        train = ~test if np.any(~test) else test
        beta = _fit(x[train], y[train])
        held_out[test] = _sigmoid(x[test] @ beta[:-1] + beta[-1])
    beta = _fit(x, y)
    return Calibration((float(beta[0]), float(beta[1])), float(beta[2]), len(y), float(y.mean()),
                       reliability(held_out, y))  # fmt: skip
