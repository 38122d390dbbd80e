"""What the evaluation tells a catalogue run: which approach, model and variant to use (the
leaderboard's best on the current full dataset among enabled models, unless named), and the
confidence calibration fitted on the approach's stored predictions when it was scored (table
`calibrations`, one row per result key)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import HIERARCHICAL
from taxo_pipeline.classification.calibration import Calibration, features, fit_calibration
from taxo_pipeline.dataset.taxonomy import depth_label
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey, where
from taxo_pipeline.evaluation.store import dataset_depth
from taxo_pipeline.evaluation.views import CURRENT_DATASET
from taxo_pipeline.settings import taxonomy_depth
from taxo_pipeline.warehouse import Warehouse

RUN_MAIN_JOB = "run `taxo-pipeline materialize` first"
CALIBRATIONS = "calibrations"


@dataclass(frozen=True)
class Choice:
    key: ResultKey  # dataset: the full evaluation the approach was scored on
    strict_f1: float


def _require_evaluation(warehouse: Warehouse) -> None:
    if not warehouse.path.exists() or not all(warehouse.table_exists(t) for t in ("metrics", "datasets", "predictions")):
        raise InputError(f"no evaluation in the warehouse {warehouse.path} yet: {RUN_MAIN_JOB}")


def choose(
    warehouse: Warehouse, enabled: list[str], approach: str | None, model: str | None, variant: str | None
) -> Choice:
    """The approach named, else the leaderboard's best (strict hierarchical F1 on the current full dataset,
    enabled models only); then its best model and variant matching the names given. A model or variant
    never changes the approach: one it was not evaluated with is an error saying which ones it was."""
    if approach is not None and approach_named(approach).headline != HIERARCHICAL:
        paths = ", ".join(a.name for a in approaches() if a.headline == HIERARCHICAL)
        raise InputError(f"approach {approach} predicts only the top-level (L1) category and cannot classify a "
                         f"catalogue to a category path: choose one of {paths}")  # fmt: skip
    _require_evaluation(warehouse)
    rows = [r for r in _scored(warehouse) if r[1] in enabled and (r[3] is None or r[3] in enabled)]
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
    if (evaluated := dataset_depth(warehouse, key.dataset)) != (depth := taxonomy_depth()):
        raise InputError(
            f"the current evaluation in {warehouse.path} is at taxonomy depth {depth_label(evaluated)} but TAXO_DEPTH is "
            f"{depth_label(depth)}: run `taxo-pipeline materialize` with TAXO_DEPTH={depth_label(depth)} first, or set "
            f"TAXO_DEPTH={depth_label(evaluated)}"
        )
    return Choice(key, row[5])


def _scored(warehouse: Warehouse) -> list[tuple]:
    """(approach, model, variant, reranker, dataset, strict hF1) of every path result on the current full
    dataset, best first."""
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            f"""SELECT approach, model, variant, reranker, dataset, f1 FROM metrics
                WHERE headline AND scope = 'hierarchical' AND mode = 'strict' AND dataset = {CURRENT_DATASET}
                ORDER BY f1 DESC, approach, model, variant"""
        ).fetchall()


def _listed(rows: list[tuple], column: int) -> str:
    return ", ".join(dict.fromkeys(str(r[column]) for r in rows))


def calibrate(warehouse: Warehouse, key: ResultKey) -> Calibration:
    """Platt scaling on the key's stored top-1/top-2 scores against the evaluation's ground truth."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            """SELECT p.product_id, list(p.score ORDER BY p.rank) AS scores,
                      max(p.category) FILTER (p.rank = 1) = max(e.ground_truth_category) AS correct
               FROM predictions p JOIN products_experiment_l3 e USING (product_id)
               WHERE p.approach = ? AND p.model = ? AND p.variant = ? AND p.reranker IS NOT DISTINCT FROM ?
                 AND p.dataset = ? AND p.rank <= 2
               GROUP BY p.product_id ORDER BY p.product_id""",
            [key.approach, key.model, key.variant, key.reranker, key.dataset],
        ).fetchall()
    if not rows:
        raise InputError(f"no stored predictions of {key} on the evaluation set to calibrate on: {RUN_MAIN_JOB}")
    top1, margin = features([[("", s) for s in scores] for _, scores, _ in rows])
    return fit_calibration([r[0] for r in rows], top1, margin, np.array([bool(r[2]) for r in rows]))


def save_calibration(warehouse: Warehouse, key: ResultKey) -> Calibration:
    """Fit the key's calibration and replace its row in `calibrations` (one transaction)."""
    calibration = calibrate(warehouse, key)
    row = {**{c: pa.array([v], pa.string()) for c, v in key.columns.items()},  # typed: reranker is often None
           "products": [calibration.products], "accuracy": [calibration.accuracy],
           "weight_top1": [calibration.weights[0]], "weight_margin": [calibration.weights[1]],
           "bias": [calibration.bias], "reliability": [json.dumps(calibration.reliability)],
           "fitted_at": [datetime.now(UTC)]}  # fmt: skip
    warehouse.replace_partition(CALIBRATIONS, key.columns, pa.table(row))
    return calibration


def load_calibration(warehouse: Warehouse, key: ResultKey) -> Calibration:
    """The calibration stored when the key was scored."""
    condition, params = where(key)
    row = None
    if warehouse.table_exists(CALIBRATIONS):
        with warehouse.connect(read_only=True) as con:
            row = con.execute(
                f"SELECT weight_top1, weight_margin, bias, products, accuracy, reliability FROM {CALIBRATIONS} "
                f"WHERE {condition}",
                params,
            ).fetchone()
    if row is None:
        raise InputError(f"no confidence calibration of {key} in {warehouse.path}: {RUN_MAIN_JOB}")
    return Calibration((row[0], row[1]), row[2], row[3], row[4], tuple(json.loads(row[5])))
