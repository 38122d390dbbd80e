"""What the evaluation tells a catalogue run: which approach, model and variant to use (the
leaderboard's best on the current full dataset among enabled models, unless named), and the
confidence calibration fitted on the approach's stored predictions when it was scored (table
`calibrations`, one row per result key; table `heldout_confidences`, one row per key and labelled product,
which the view `precision_at_coverage` reads).

Everything a catalogue run or the service reads here is the published copy of the results
(warehouse/publication.py): the last result that was whole, never a rerun half-way, and never a
calibration from one computation paired with metrics or model settings of another. The tables and
their SQL are warehouse/results.py's and warehouse/calibrations.py's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import HIERARCHICAL
from taxo_pipeline.classification.calibration import (
    ECE_BINS,
    Calibration,
    deciles,
    ece,
    features,
    fit_calibration,
    max_gap,
)
from taxo_pipeline.classification.coverage import correct_by_level, held_out_rows
from taxo_pipeline.dataset.taxonomy import depth_label
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.protocol import DEV, TEST, split_mask, split_of
from taxo_pipeline.warehouse.calibrations import stored_calibration, write_calibration
from taxo_pipeline.warehouse.results import dataset_depth, published_scores, ranked_with_truth
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline.workspace import Workspace

RUN_MAIN_JOB = "run `taxo-pipeline materialize` first"


@dataclass(frozen=True)
class Choice:
    key: ResultKey  # dataset: the full evaluation the approach was scored on
    strict_f1: float


def _require_evaluation(warehouse: Warehouse) -> None:
    if not warehouse.exists() or not all(warehouse.table_exists(t) for t in ("metrics", "datasets", "predictions")):
        raise InputError(f"no evaluation in the warehouse {warehouse.path} yet: {RUN_MAIN_JOB}")


def choose(
    workspace: Workspace, enabled: list[str], approach: str | None, model: str | None, variant: str | None
) -> Choice:
    """The approach named, else the leaderboard's best (strict hierarchical F1 on the current full dataset,
    enabled models only) in the workspace's warehouse; then its best model and variant matching the names
    given. A model or variant never changes the approach: one it was not evaluated with is an error saying
    which ones it was."""
    warehouse, modules = workspace.warehouse, workspace.settings.approaches
    if approach is not None and approach_named(approach, modules).headline != HIERARCHICAL:
        paths = ", ".join(a.name for a in approaches(modules) if a.headline == HIERARCHICAL)
        raise InputError(f"approach {approach} predicts only the top-level (L1) category and cannot classify a "
                         f"catalogue to a category path: choose one of {paths}")  # fmt: skip
    _require_evaluation(warehouse)
    rows = [r for r in published_scores(warehouse) if r[1] in enabled and (r[3] is None or r[3] in enabled)]
    if not rows:
        raise InputError(f"no evaluation with an enabled model on the current dataset in {warehouse.path}: {RUN_MAIN_JOB}")
    name = approach or rows[0][0]
    best = "" if approach else " (the leaderboard's best)"
    candidates = [r for r in rows if r[0] == name]
    if not candidates:
        raise InputError(f"approach {name} has no evaluation with an enabled model on the current dataset in "
                         f"{warehouse.path}: {RUN_MAIN_JOB} with it, or choose one that has: {_listed(rows, 0)}")  # fmt: skip
    for column, value, option in ((1, model, "--model"), (2, variant, "--variant")):
        if value is None:
            continue
        if not (matching := [r for r in candidates if r[column] == value]):
            elsewhere = sorted({r[0] for r in rows if r[column] == value})
            fix = f"; {value} was evaluated with {', '.join(elsewhere)}: name it with --approach" if elsewhere else ""
            raise InputError(f"approach {name}{best} was never evaluated with {option} {value} on the current dataset "
                             f"(enabled models only); it was with: {_listed(candidates, column)}{fix}")  # fmt: skip
        candidates = matching
    row = candidates[0]
    key = ResultKey(row[0], row[1], row[2], row[3], row[4])
    if (evaluated := dataset_depth(warehouse, key.dataset)) != (depth := workspace.depth):
        raise InputError(
            f"the current evaluation in {warehouse.path} is at taxonomy depth {depth_label(evaluated)} but TAXO_DEPTH is "
            f"{depth_label(depth)}: run `taxo-pipeline materialize` with TAXO_DEPTH={depth_label(depth)} first, or set "
            f"TAXO_DEPTH={depth_label(evaluated)}"
        )
    return Choice(key, row[5])


def _listed(rows: list[tuple], column: int) -> str:
    return ", ".join(dict.fromkeys(str(r[column]) for r in rows))


@dataclass(frozen=True)
class Calibrated:
    calibration: Calibration
    held_out: pa.Table  # coverage.held_out_rows: each labelled product's cross-fitted confidence


def calibrate(warehouse: Warehouse, key: ResultKey) -> Calibrated:
    """The key's confidence calibration from its stored top-k against the evaluation's ground truth: the
    method chosen on the protocol's dev part, fitted on every labelled product, with held-out confidences."""
    rows = ranked_with_truth(warehouse, key)
    if not rows:
        raise InputError(f"no stored predictions of {key} on the evaluation set to calibrate on: {RUN_MAIN_JOB}")
    ids, ranked = [r[0] for r in rows], [r[1] for r in rows]
    correct = correct_by_level([r[0][0] for r in ranked], [r[2] for r in rows])
    calibration, confidence = fit_calibration(ids, features(ranked), correct[:, 2], split_mask(ids, DEV))
    return Calibrated(calibration, held_out_rows(key, ids, confidence, correct))


def save_calibration(warehouse: Warehouse, key: ResultKey) -> Calibration:
    """Fit the key's calibration and replace its rows in `calibrations` and the held-out confidences
    (one transaction; readers see them once published)."""
    fitted = calibrate(warehouse, key)
    calibration = fitted.calibration
    test = [split_of(p) == TEST for p in fitted.held_out["product_id"].to_pylist()]
    confidence, correct = fitted.held_out["confidence"].to_numpy(), fitted.held_out["correct_exact"].to_numpy()
    test_bins = deciles(confidence[test], correct[test]) if any(test) else ()
    row = {**{c: pa.array([v], pa.string()) for c, v in key.columns.items()},  # typed: reranker is often None
           "method": [calibration.method], "products": [calibration.products], "accuracy": [calibration.accuracy],
           "ece": [calibration.ece], "ece_bins": [ECE_BINS], "max_decile_gap": [max_gap(calibration.reliability)],
           "ece_test": pa.array([ece(test_bins) if test_bins else None], pa.float64()),
           "reliability": [json.dumps(calibration.reliability)], "calibration": [json.dumps(calibration.to_dict())],
           "fitted_at": [datetime.now(UTC)]}  # fmt: skip
    write_calibration(warehouse, key, pa.table(row), fitted.held_out)
    return calibration


def load_calibration(warehouse: Warehouse, key: ResultKey) -> Calibration:
    """The published calibration stored when the key was scored (one from before the methods competed is
    NULL: it is scored again)."""
    if (stored := stored_calibration(warehouse, key)) is None:
        raise InputError(f"no confidence calibration of {key} in {warehouse.path}: {RUN_MAIN_JOB}")
    return Calibration.from_dict(json.loads(stored))
