"""A catalogue's own labels: the categories its merchant already set (a Shopify export's `Product Category`,
or a `category` column), and what label transfer learns from them.

A label counts when it is a node of the taxonomy once trimmed to the run's depth; any other value
(`Uncategorized`, a localised or retired path) is counted by value and the product is classified like
an unlabelled one. Labelled products keep their label in the output.

Learning (`learn`): the labelled products join label transfer's pool, and the vote weight and the
confidence calibration are chosen on them by k-fold cross-fitting: each labelled product is scored with
the votes of the other folds only (approaches/label_transfer.py::cross_fit), so the confidence
describes this catalogue rather than the evaluation's products. The figures reported for the catalogue
(accuracy, calibration, precision at coverage, the review threshold) come from each fold scored with the
weights and calibrator chosen on the other folds' rows (whose own votes may come from that fold's labels).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from taxo_pipeline.approaches.label_transfer import CrossFit, cross_fit
from taxo_pipeline.approaches.spec import ClassifyRequest, Voters
from taxo_pipeline.classification.calibration import (
    Calibration,
    Features,
    deciles,
    ece,
    fit_calibration,
    max_gap,
)
from taxo_pipeline.classification.coverage import correct_by_level, coverage_table, threshold_for_precision
from taxo_pipeline.classification.product_catalogue import read_shards
from taxo_pipeline.dataset.taxonomy import SEPARATOR, TrimmedTaxonomy, trim_path
from taxo_pipeline.files import write_atomic
from taxo_pipeline.retrieval.neighbour_votes import VOTE_WEIGHTS
from taxo_pipeline.warehouse import classifications
from taxo_pipeline.warehouse.store import Warehouse

# Shop labels are close neighbours (a shop's products look alike), so their votes may outweigh retrieval
# by more than the evaluation's pool ever did: one doubling beyond its grid.
CATALOGUE_VOTE_WEIGHTS = (*VOTE_WEIGHTS, 8.0, 16.0)
PRIOR_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)  # the catalogue's category shares, in the same units
# Whether the evaluation's labelled products still vote (with the weight the evaluation chose): another shop's
# products may be no evidence for this one.
POOL_SCALES = (0.0, 1.0)
WEIGHTS = tuple((v, p, s) for v in CATALOGUE_VOTE_WEIGHTS for p in PRIOR_WEIGHTS for s in POOL_SCALES)
FEW_LABELS_WEIGHTS = (4.0, 0.0, 1.0)  # nothing to choose them on: the labels vote, the pool as in the evaluation
# Below this many labelled products, cross-fitting cannot choose a weight or confirm a calibration: the
# labels still vote (FEW_LABELS_WEIGHTS) and keep their category; the confidence is the evaluation's, unconfirmed.
MIN_LABELLED = 20
UNCATEGORIZED = "Uncategorized"
LABEL_COLUMNS = ("product_id", "product_title", "product_description", "ground_truth_category")


def normalise_label(value: str) -> str:
    """A merchant's path with its separators spaced as the taxonomy spells them."""
    return SEPARATOR.join(part.strip() for part in value.split(">"))


@dataclass(frozen=True)
class CatalogueLabels:
    products: pl.DataFrame  # LABEL_COLUMNS: the products whose label is a taxonomy node, at the run's depth
    unrecognised: dict[str, int] = field(default_factory=dict)  # label value -> products, for the others

    @property
    def count(self) -> int:
        return self.products.height

    @functools.cached_property
    def fingerprint(self) -> str:
        """Of the labelled products' ids, texts and labels: what learning reads from the catalogue."""
        digest = hashlib.sha256()
        for row in self.products.iter_rows():
            digest.update("\x1f".join(row).encode() + b"\x1e")
        return digest.hexdigest()[:16]

    @functools.cached_property
    def _by_id(self) -> dict[str, str]:
        return dict(zip(self.products["product_id"].to_list(), self.products["ground_truth_category"].to_list()))

    def usable(self, product_ids: Sequence[str], categories: Sequence[str | None]) -> list[str | None]:
        """Per product, its label at the run's depth where it is a taxonomy node, else None."""
        return [self._by_id.get(p) if c is not None else None for p, c in zip(product_ids, categories, strict=True)]

    def report(self) -> list[str]:
        lines = [f"{self.count} products carry a category the merchant set (kept as they are)"]
        if self.unrecognised:
            shown = ", ".join(f"{v!r} x{n}" for v, n in sorted(self.unrecognised.items(), key=lambda i: (-i[1], i[0]))[:8])
            more = len(self.unrecognised) - 8
            lines.append(f"{sum(self.unrecognised.values())} labels are not taxonomy paths and were classified as "
                         f"unlabelled: {shown}{f' and {more} more values' if more > 0 else ''}")  # fmt: skip
        return lines


def label_at_depth(value: str | None, nodes: set[str], depth) -> str | None:
    """The merchant's label trimmed to the run's depth, if that is a taxonomy node other than `Uncategorized`
    (a node of the taxonomy that says no category was chosen)."""
    if value is None or not value.strip():
        return None
    trimmed = trim_path(normalise_label(value), depth)
    return trimmed if trimmed in nodes and trimmed.split(SEPARATOR)[0] != UNCATEGORIZED else None


def read_labels(path: Path, shard_size: int, taxonomy: TrimmedTaxonomy) -> CatalogueLabels:
    """The catalogue's labelled products, streamed shard by shard (only labelled rows are kept)."""
    nodes, kept, unrecognised = set(taxonomy.paths), [], Counter()
    for shard in read_shards(path, shard_size):
        frame = shard.products.filter(pl.col("category").is_not_null())
        if not frame.height:
            continue
        labels = [label_at_depth(v, nodes, taxonomy.depth) for v in frame["category"].to_list()]
        unrecognised.update(v for v, label in zip(frame["category"].to_list(), labels) if label is None)
        frame = frame.with_columns(pl.Series("ground_truth_category", labels, pl.String))
        kept.append(frame.filter(pl.col("ground_truth_category").is_not_null()).select(LABEL_COLUMNS))
    products = pl.concat(kept) if kept else pl.DataFrame(schema=dict.fromkeys(LABEL_COLUMNS, pl.String))
    return CatalogueLabels(products, dict(unrecognised))


@dataclass(frozen=True)
class Learned:
    """What the catalogue's labelled products taught: the vote weight, the calibration (fitted on every
    labelled product), and their nested held-out confidence and correctness (L1, L2, exact)."""

    weights: tuple[float, float, float]  # (vote weight, prior weight, pool scale): approaches/spec.py's Voters
    calibration: Calibration
    confidence: np.ndarray
    correct: np.ndarray  # labelled x (L1, L2, exact)
    fold_weights: dict[int, tuple[float, float, float]]

    @property
    def labelled(self) -> int:
        return len(self.confidence)

    def review_threshold(self, target: float | None) -> float | None:
        return None if target is None else threshold_for_precision(self.confidence, self.correct[:, 2], target)

    def figures(self) -> dict:
        bins = deciles(self.confidence, self.correct[:, 2].astype(float))
        return {"labelled": self.labelled, "exact_accuracy": float(self.correct[:, 2].mean()),
                "l1_accuracy": float(self.correct[:, 0].mean()), "ece": ece(bins), "max_decile_gap": max_gap(bins),
                "vote_weight": self.weights[0], "prior_weight": self.weights[1], "pool_scale": self.weights[2],
                "calibration": self.calibration.method}  # fmt: skip

    def to_dict(self) -> dict:
        return {"weights": list(self.weights), "calibration": self.calibration.to_dict(),
                "confidence": self.confidence.tolist(), "correct": self.correct.astype(int).tolist(),
                "fold_weights": {str(k): list(v) for k, v in self.fold_weights.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> Learned:
        return cls(tuple(data["weights"]), Calibration.from_dict(data["calibration"]),
                   np.array(data["confidence"], dtype=np.float64),
                   np.array(data["correct"], dtype=bool).reshape(-1, 3),
                   {int(k): tuple(v) for k, v in data["fold_weights"].items()})  # fmt: skip


def _features(fit: CrossFit, rows: np.ndarray, weight: int, paths: Sequence[str]) -> Features:
    top, scores = fit.top[rows, weight], fit.scores[rows, weight]
    levels = np.array([len(paths[i].split(SEPARATOR)) for i in top[:, 0]], dtype=np.float64)
    return Features(scores[:, 0], scores[:, 0] - scores[:, 1], levels)


def learn(fit: CrossFit, product_ids: Sequence[str], paths: Sequence[str]) -> Learned:
    """The weights with the best exact accuracy over the cross-fitted labelled products (ties: the smallest),
    the calibration of their scores; and, per fold, the same choices made on the other folds' rows (whose own
    scores took votes from every other fold, this one's included: the labels of a fold never reach its own
    products' scores, but do reach the rows its weights are chosen on). Needs two folds or more."""
    right = fit.top[:, :, 0] == fit.labels[:, None]  # products x weights
    ids = list(product_ids)

    def choose(rows: np.ndarray) -> int:
        return int(np.argmax(right[rows].mean(axis=0)))

    def calibrate(rows: np.ndarray, weight: int) -> Calibration:
        f = _features(fit, rows, weight, paths)
        return fit_calibration([ids[i] for i in rows], f, right[rows, weight], np.ones(len(rows), dtype=bool))[0]

    everyone = np.arange(len(ids))
    confidence, predicted, fold_weights = np.empty(len(ids)), [""] * len(ids), {}
    for fold in np.unique(fit.folds):
        test, train = np.flatnonzero(fit.folds == fold), np.flatnonzero(fit.folds != fold)
        if not len(train):
            raise ValueError("learning from a catalogue's labels needs products in two folds or more")
        weight = choose(train)
        fold_weights[int(fold)] = fit.weights[weight]
        confidence[test] = calibrate(train, weight).confidence(_features(fit, test, weight, paths))
        for i in test:
            predicted[i] = paths[fit.top[i, weight, 0]]
    best = choose(everyone)
    correct = correct_by_level(predicted, [paths[i] for i in fit.labels])
    return Learned(fit.weights[best], calibrate(everyone, best), confidence, correct, fold_weights)


def learn_from_catalogue(request: ClassifyRequest, labels: CatalogueLabels) -> tuple[Voters | None, Learned | None]:
    """The catalogue's labelled products as voters of `request` (label transfer's), with the weight and the
    calibration learned on them when there are MIN_LABELLED or more; (None, None) without labels."""
    if labels.count == 0:
        return None, None
    fit = cross_fit(request, labels.products, WEIGHTS)
    if labels.count < MIN_LABELLED or len(np.unique(fit.folds)) < 2:
        return Voters(fit.vectors, fit.labels, fit.ids, *FEW_LABELS_WEIGHTS), None
    learned = learn(fit, labels.products["product_id"].to_list(), request.taxonomy.paths)
    return Voters(fit.vectors, fit.labels, fit.ids, *learned.weights), learned


# How learning works: part of the learning fingerprint, so a results folder never reuses what an earlier
# version of this module learned.
LEARNING_VERSION = 2
LEARNED_FILE = "learned.json"  # in the run's results folder; the voters in voters-<fingerprint>.npz beside it
LEARNING_LOCK = ".learning.lock"


def learning_fingerprint(parts: dict) -> str:
    """Of everything learning reads (the result key, the evaluation's calibration, the corrections, the labels,
    the taxonomy's paths: voters' labels index them), and LEARNING_VERSION."""
    return hashlib.sha256(json.dumps({**parts, "version": LEARNING_VERSION}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_learning(directory: Path, fingerprint: str, labels: CatalogueLabels, voters: Voters, learned: Learned | None,
                  about: dict) -> None:  # fmt: skip
    """What a run learned, for its later runs and shards and the `catalogue_learning` view. The voters' file is
    named by the fingerprint, so concurrent runs (parts, shard runs) that learn the same thing write the same
    file, and a record never pairs with another learning's voters."""
    directory.mkdir(parents=True, exist_ok=True)

    def vectors(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, vectors=voters.vectors, labels=voters.labels, ids=voters.ids.astype(str),
                     weights=np.array([voters.weight, voters.prior_weight, voters.pool_scale]))  # fmt: skip

    write_atomic(directory / f"voters-{fingerprint}.npz", vectors)
    save_record(directory, fingerprint, labels, learned, about)
    for old in directory.glob("voters-*.npz"):
        if old.name != f"voters-{fingerprint}.npz":
            old.unlink(missing_ok=True)


def save_record(directory: Path, fingerprint: str, labels: CatalogueLabels, learned: Learned | None, about: dict) -> None:
    """learned.json: what was learned, with `about` the run (catalogue, key, target precision, review
    threshold) and the held-out precision at coverage, which the `catalogue_learning` view reads."""
    coverage = coverage_table(learned.confidence, learned.correct) if learned else None
    record = {**about, "fingerprint": fingerprint, "labelled": labels.count,
              "unrecognised_labels": [{"label": k, "products": v} for k, v in sorted(labels.unrecognised.items())],
              "figures": learned.figures() if learned else None, "coverage": coverage,
              "learned": learned.to_dict() if learned else None}  # fmt: skip
    write_atomic(directory / LEARNED_FILE, lambda tmp: tmp.write_text(json.dumps(record)))


def saved_about(directory: Path) -> dict:
    """The `about` part of learned.json (empty if there is none)."""
    try:
        record = json.loads((directory / LEARNED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in record.items() if k not in ("fingerprint", "labelled", "unrecognised_labels", "figures",
                                                          "coverage", "learned")}  # fmt: skip


def load_learning(directory: Path, fingerprint: str) -> tuple[Voters, Learned | None] | None:
    """The voters and what was learned, if a run with this fingerprint saved them; None for anything missing,
    stale or unreadable (it is learned again)."""
    try:
        record = json.loads((directory / LEARNED_FILE).read_text())
        if record.get("fingerprint") != fingerprint:
            return None
        with np.load(directory / f"voters-{fingerprint}.npz") as saved:
            ids = saved["ids"].astype(object)
            voters = Voters(saved["vectors"], saved["labels"], ids, *saved["weights"].tolist())
        return voters, Learned.from_dict(record["learned"]) if record["learned"] else None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def refresh_learning_view(warehouse: Warehouse, root: Path) -> None:
    """`catalogue_learning`: per catalogue and approach, what its labelled products taught (k-fold figures and
    held-out precision at coverage, NULL with too few labels), the review threshold of the last target precision,
    and the label values that are not taxonomy paths; once one run saved any (warehouse/classifications.py)."""
    if any(Path(root).glob(f"*/*/{LEARNED_FILE}")):
        classifications.refresh_learning_view(warehouse, str(Path(root) / "*" / "*" / LEARNED_FILE))
