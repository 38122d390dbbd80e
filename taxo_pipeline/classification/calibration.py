"""Calibrated confidence: the probability that a product's top-1 path is exactly right at the evaluation
depth, from what its ranked candidates show (top-1 score, margin to the top-2, how many levels the top-1
path reaches).

Several methods compete (METHODS); the one with the lowest cross-fitted Brier score on the protocol's
development part is kept (taxo_pipeline/evaluation/protocol.py), then fitted on every labelled product.
Its reliability is reported on held-out folds: each product's confidence comes from a calibrator fitted
on the other folds (k-fold cross-fitting), summarised by the expected calibration error over 10
equal-count bins (the deciles of the predicted confidence) and each decile's predicted vs observed
accuracy. numpy only: the fits are small (a few hundred products, at most four parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from taxo_pipeline.dataset.taxonomy import SEPARATOR
from taxo_pipeline.retrieval.neighbour_votes import assign_folds

BINS = 10  # equal-count bins: each holds a tenth of the products, by predicted confidence
FOLDS = 5
RIDGE = 1e-3  # keeps the fit finite when the classes separate (a tiny set, all right or all wrong)
TEMPERATURES = np.geomspace(1e-3, 10.0, 241)  # the temperature grid: scores range from cosines to vote sums
ECE_BINS = f"{BINS} equal-count"


@dataclass(frozen=True)
class Features:
    """Per product: top-1 score, margin to the top-2 (0 with one candidate) and levels of the top-1 path
    (0 without a prediction). Only the top two candidates count, so any --top-k from 2 up gives a
    catalogue product the confidence the evaluation's top-5 would."""

    top1: np.ndarray
    margin: np.ndarray
    levels: np.ndarray

    def __len__(self) -> int:
        return len(self.top1)

    def take(self, rows: np.ndarray) -> Features:
        return Features(self.top1[rows], self.margin[rows], self.levels[rows])


def features(ranked: Sequence[Sequence[tuple[str, float]]]) -> Features:
    top1 = np.array([r[0][1] if r else 0.0 for r in ranked], dtype=np.float64)
    second = np.array([r[1][1] if len(r) > 1 else (r[0][1] if r else 0.0) for r in ranked], dtype=np.float64)
    levels = np.array([len(r[0][0].split(SEPARATOR)) if r else 0 for r in ranked], dtype=np.float64)
    return Features(top1, top1 - second, levels)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # never overflows


def fit_logistic(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
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


def isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: the non-decreasing step function of x closest to y in squared error, as
    (each block's mean x, its mean y); equal x values share a block."""
    values, which = np.unique(x, return_inverse=True)
    blocks: list[list[float]] = []  # [sum x, sum y, count], left to right
    for value, total, count in zip(values, np.bincount(which, weights=y), np.bincount(which)):
        blocks.append([value * count, total, count])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    sums = np.array(blocks, dtype=np.float64)
    return sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]


def top_softmax(margin: np.ndarray, temperature: float) -> np.ndarray:
    """The top-1's share of softmax((top-1, top-2 scores) / T): sigmoid(margin / T)."""
    return _sigmoid(margin / temperature)


def _linear(columns: Callable[[Features], list[np.ndarray]]):
    def fit(f: Features, y: np.ndarray) -> dict:
        return {"beta": fit_logistic(np.column_stack(columns(f)), y).tolist()}

    def predict(params: dict, f: Features) -> np.ndarray:
        beta = np.array(params["beta"])
        return _sigmoid(np.column_stack(columns(f)) @ beta[:-1] + beta[-1])

    return fit, predict


_platt = _linear(lambda f: [f.top1, f.margin])
_platt_depth = _linear(lambda f: [f.top1, f.margin, f.levels])


def _fit_isotonic(f: Features, y: np.ndarray) -> dict:
    """Isotonic regression on the platt-depth probability: the logistic fit orders the products, the
    step function fixes its shape; predictions interpolate between the steps."""
    stage = _platt_depth[0](f, y)
    x, p = isotonic(_platt_depth[1](stage, f), y)
    return {**stage, "x": x.tolist(), "y": p.tolist()}


def _predict_isotonic(params: dict, f: Features) -> np.ndarray:
    return np.interp(_platt_depth[1](params, f), params["x"], params["y"])


def _fit_temperature(f: Features, y: np.ndarray) -> dict:
    """The temperature of the top-2 softmax with the least log loss on the grid."""
    eps = 1e-6
    losses = [-np.mean(y * np.log(np.clip(p, eps, 1)) + (1 - y) * np.log(np.clip(1 - p, eps, 1)))
              for p in (top_softmax(f.margin, t) for t in TEMPERATURES)]  # fmt: skip
    return {"temperature": float(TEMPERATURES[int(np.argmin(losses))])}


METHODS: dict[str, tuple[Callable, Callable]] = {
    "platt": _platt,  # logistic on top-1 score and margin
    "platt-depth": _platt_depth,  # ... and the levels the top-1 path reaches
    "isotonic": (_fit_isotonic, _predict_isotonic),
    "temperature": (_fit_temperature, lambda params, f: top_softmax(f.margin, params["temperature"])),
}


def fit(method: str, f: Features, y: np.ndarray) -> dict:
    return METHODS[method][0](f, np.asarray(y, dtype=np.float64))


def predict(method: str, params: dict, f: Features) -> np.ndarray:
    return np.clip(METHODS[method][1](params, f), 0.0, 1.0)


def cross_fitted(method: str, product_ids: Sequence[str], f: Features, y: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Each product's confidence from a calibrator fitted without its fold (folds by product-id hash);
    a set too small for folds gets the in-sample fit."""
    held_out = np.empty(len(f))
    fold = assign_folds(list(product_ids), folds) if len(f) >= 2 * folds else np.zeros(len(f), dtype=np.int64)
    for k in np.unique(fold):
        test = fold == k
        train = ~test if np.any(~test) else test
        held_out[test] = predict(method, fit(method, f.take(train), y[train]), f.take(test))
    return held_out


def brier(predicted: np.ndarray, correct: np.ndarray) -> float:
    return float(np.mean((predicted - correct) ** 2))


def deciles(predicted: np.ndarray, correct: np.ndarray, bins: int = BINS) -> tuple[dict, ...]:
    """Equal-count bins by predicted confidence (ties in a stable order): per bin, its range, size,
    mean predicted confidence and observed accuracy."""
    order = np.argsort(predicted, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    return tuple(
        {"low": float(predicted[g].min()), "high": float(predicted[g].max()), "products": int(len(g)),
         "predicted": float(predicted[g].mean()), "observed": float(np.mean(correct[g]))}
        for g in groups
    )  # fmt: skip


def ece(bins: Sequence[dict]) -> float:
    """Expected calibration error: the product-weighted mean |predicted - observed| over the bins."""
    total = sum(b["products"] for b in bins)
    return float(sum(b["products"] * abs(b["predicted"] - b["observed"]) for b in bins) / total) if total else 0.0


def max_gap(bins: Sequence[dict]) -> float:
    return max((abs(b["predicted"] - b["observed"]) for b in bins), default=0.0)


@dataclass(frozen=True)
class Calibration:
    method: str
    params: dict
    products: int  # labelled products it was fitted on
    accuracy: float  # their exact top-1 accuracy at the evaluation depth
    reliability: tuple[dict, ...] = ()  # held-out deciles: low, high, products, predicted, observed
    ece: float = 0.0  # over the held-out deciles
    methods: dict = field(default_factory=dict)  # each method's cross-fitted Brier score on the dev part

    def confidence(self, f: Features) -> np.ndarray:
        return predict(self.method, self.params, f)

    def to_dict(self) -> dict:
        return {"method": self.method, "params": self.params, "products": self.products, "accuracy": self.accuracy,
                "reliability": list(self.reliability), "ece": self.ece, "methods": self.methods}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(data["method"], data["params"], data["products"], data["accuracy"], tuple(data["reliability"]),
                   data["ece"], data["methods"])  # fmt: skip


def choose_method(product_ids: Sequence[str], f: Features, y: np.ndarray, dev: np.ndarray) -> tuple[str, dict]:
    """The method with the lowest cross-fitted Brier score on the dev rows (ties: METHODS' order)."""
    rows = np.flatnonzero(dev) if np.any(dev) else np.arange(len(f))
    ids = [product_ids[i] for i in rows]
    scores = {m: round(brier(cross_fitted(m, ids, f.take(rows), y[rows]), y[rows]), 6) for m in METHODS}
    return min(scores, key=scores.get), scores


def fit_calibration(
    product_ids: Sequence[str], f: Features, correct: np.ndarray, dev: np.ndarray, method: str | None = None
) -> tuple[Calibration, np.ndarray]:
    """The method chosen on the dev rows (unless named), fitted on every product; with every product's
    cross-fitted (held-out) confidence, which the reliability figures summarise."""
    y = np.asarray(correct, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("calibration needs at least one labelled prediction")
    chosen, scores = choose_method(product_ids, f, y, np.asarray(dev, dtype=bool))
    method = method or chosen
    held_out = cross_fitted(method, product_ids, f, y)
    bins = deciles(held_out, y)
    return Calibration(method, fit(method, f, y), len(y), float(y.mean()), bins, ece(bins), scores), held_out
