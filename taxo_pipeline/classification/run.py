"""Classify a catalogue shard by shard: the whole catalogue is validated first (nothing is classified or
written from a file with a bad row), then each shard not already written with the same rows and
settings is classified in chunks (one products x categories score matrix per chunk, never per
catalogue), its rows get a calibrated confidence, and its file is written atomically. Once every
shard is written the run's results are published to the `classifications` view. A killed run loses
only the shard it was on; `part`/`parts` splits the shards between concurrent runs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import Classified, Voters
from taxo_pipeline.classification.calibration import ECE_BINS, FOLDS, Calibration, deciles, features
from taxo_pipeline.classification.catalogue_labels import (
    MIN_LABELLED,
    CatalogueLabels,
    Learned,
    learning_fingerprint,
    read_labels,
)
from taxo_pipeline.classification.coverage import review_threshold
from taxo_pipeline.classification.evaluated import choose, load_calibration
from taxo_pipeline.classification.product_catalogue import (
    CatalogueCheck,
    Shard,
    check_file,
    read_shards,
    validate_catalogue,
)
from taxo_pipeline.classification.review import with_review
from taxo_pipeline.classification.reviewer_labels import Reviews, reviewed_categories, reviews, shard_fingerprint
from taxo_pipeline.classification.shards import (
    SHARD_COLUMNS,
    ShardRows,
    catalogue_name,
    is_done,
    publish,
    remove_beyond,
    restamp,
    run_directory,
    shard_key,
    shard_path,
    shard_table,
    write_shard,
)
from taxo_pipeline.dataset.corrections import NONE, corrections_fingerprint
from taxo_pipeline.dataset.google_mapping import GoogleMapping, google_mapping
from taxo_pipeline.dataset.tables import load_corrections, load_trimmed_taxonomy
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.publication import settings_fingerprint
from taxo_pipeline.files import file_sha256
from taxo_pipeline.sie.model_catalogue import Catalogue, load_catalogue
from taxo_pipeline.warehouse.publication import published_state
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline.workspace import Workspace

log = logging.getLogger(__name__)

Classify = Callable[[pl.DataFrame], Classified]


@dataclass(frozen=True)
class CatalogueRun:
    products: Path
    catalogue: str  # the directory name of the catalogue's results
    catalogue_fingerprint: str
    key: ResultKey
    calibration: Calibration
    data_dir: Path
    top_k: int = 5
    shard_size: int = 10_000
    chunk_size: int = 2_048
    part: int = 0  # this run classifies the shards whose index % parts == part
    parts: int = 1
    target_precision: float | None = None  # set: products below review_threshold get needs_review
    review_threshold: float | None = None  # None with a target: no threshold reaches it, all need review
    corrections: str = NONE  # the fingerprint of the reviewers' corrections a label-learning approach votes with
    reviewed: Reviews = field(default_factory=dict)  # the corrections' labels by product id (classification/reviewer_labels.py)
    labels: CatalogueLabels | None = None  # the categories the catalogue already carries (catalogue_labels.py)
    # Without enough labels of its own, a catalogue cannot confirm the evaluation's calibration: with a target
    # precision every product goes to review unless the user trusts the evaluation's threshold.
    trust_evaluation: bool = False
    google: GoogleMapping | None = None  # Shopify -> Google product categories for the output
    taxonomy_fingerprint: str = ""  # of the taxonomy's paths at the run's depth (learned voters index them)
    approach_learns: bool = False  # the approach learns from labels (registry: Approach.needs_labels)
    # What the labels taught (catalogue_labels.learn_from_catalogue): derived from the fields above, so not
    # part of the fingerprint; set by with_learning before any shard is classified.
    voters: Voters | None = None
    learned: Learned | None = None

    def shard_fingerprint(self, shard: Shard) -> str:
        """The shard's rows and the reviews that match them: a new review rewrites only its shards."""
        return shard_fingerprint(shard.fingerprint, shard.products, self.reviewed)

    @property
    def directory(self) -> Path:
        return run_directory(self.data_dir, self.catalogue, self.key)

    @property
    def fingerprint(self) -> str:
        """Settings that change a shard's rows besides the rows themselves."""
        parts = {"key": self.key.columns, "top_k": self.top_k, "calibration": self.calibration.to_dict(),
                 "columns": SHARD_COLUMNS}  # fmt: skip
        if self.target_precision is not None:
            parts["review"] = [self.target_precision, self.review_threshold]
        if self.corrections != NONE:  # new corrections reclassify every shard of an approach that learns from them
            parts["corrections"] = self.corrections
        if self.labels is not None and self.labels.count:
            parts["labels"] = [self.learning_fingerprint, self.learns]
        if self.trust_evaluation:
            parts["trust_evaluation"] = True
        if self.google is not None:
            parts["google"] = self.google.fingerprint
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def learning_fingerprint(self) -> str:
        """What learning from the catalogue's labels reads: a later run or shard with the same reuses it."""
        return learning_fingerprint({"key": self.key.columns, "calibration": self.calibration.to_dict(),
                                     "corrections": self.corrections, "taxonomy": self.taxonomy_fingerprint,
                                     "labels": self.labels.fingerprint if self.labels is not None else None})  # fmt: skip

    @property
    def learns(self) -> bool:
        """The approach learns from labels and the catalogue has some: they vote, and may set the calibration."""
        return self.approach_learns and self.labels is not None and self.labels.count > 0

    @property
    def confirmed(self) -> bool:
        """The confidence is calibrated on this catalogue's own labelled products."""
        return self.learned is not None

    @property
    def reviews_everything(self) -> bool:
        """A target precision the catalogue cannot confirm (and the evaluation's threshold is not trusted)."""
        return self.target_precision is not None and not self.confirmed and not self.trust_evaluation

    @property
    def confidence_calibration(self) -> Calibration:
        return self.learned.calibration if self.learned else self.calibration

    @property
    def threshold(self) -> float | None:
        """The review threshold in force: the catalogue's own, else the evaluation's if trusted; None with a
        target precision sends every product to review."""
        if self.target_precision is None:
            return None
        if self.learned is not None:
            return self.learned.review_threshold(self.target_precision)
        return None if self.reviews_everything else self.review_threshold

    def with_learning(self, voters: Voters | None, learned: Learned | None) -> CatalogueRun:
        return replace(self, voters=voters, learned=learned)


CATALOGUE_VAR = "TAXO_CATALOGUE"


def catalogue_setting(workspace: Workspace, products: str | None = None) -> Path:
    """The catalogue the Dagster asset and sensor classify: the run config's, else TAXO_CATALOGUE."""
    if products:
        return Path(products).expanduser()
    if catalogue := workspace.settings.catalogue:
        return catalogue
    raise InputError(f"no catalogue to classify: set {CATALOGUE_VAR} or the run config's `products`")


@dataclass(frozen=True)
class Choices:
    """What the user names (None: the leaderboard's best) and the run's sizes."""

    approach: str | None = None
    model: str | None = None
    variant: str | None = None
    top_k: int = 5
    shard_size: int = 10_000
    chunk_size: int = 2_048
    part: int = 0
    parts: int = 1
    target_precision: float | None = None
    trust_evaluation: bool = False


def _approach_for(workspace: Workspace, enabled: list[str], choices: Choices, labels: CatalogueLabels) -> str | None:
    """The approach named, else, for a catalogue with labels of its own, the best evaluated approach that learns
    from labels (None: the leaderboard's best)."""
    if choices.approach or not labels.count:
        return choices.approach
    learning = []
    for candidate in (a.name for a in approaches(workspace.settings.approaches) if a.needs_labels):
        try:
            learning.append(choose(workspace, enabled, candidate, choices.model, choices.variant))
        except InputError:  # not evaluated with these models
            continue
    return max(learning, key=lambda c: c.strict_f1).key.approach if learning else None


# The last catalogues' labels by file content: the catalogue sensor prepares a run every tick, and an unchanged
# 100,000-product export is not parsed again for them.
_LABELS: dict[tuple, CatalogueLabels] = {}


def _labels(products: Path, fingerprint: str, shard_size: int, taxonomy: TrimmedTaxonomy, taxonomy_fingerprint: str
            ) -> CatalogueLabels:  # fmt: skip
    """read_labels (every row checked on the way), once per content of the file and taxonomy."""
    key = (str(products.resolve()), fingerprint, shard_size, taxonomy.depth, taxonomy_fingerprint)
    if key not in _LABELS:
        while len(_LABELS) >= 2:
            _LABELS.pop(next(iter(_LABELS)))
        _LABELS[key] = read_labels(products, shard_size, taxonomy)
    return _LABELS[key]


def _check_model_settings(warehouse: Warehouse, model_catalogue: Catalogue, key: ResultKey) -> None:
    """The result's category vectors and calibration belong to the model settings it was computed with; a
    model whose catalogue entry or weights changed since cannot be paired with them."""
    recorded = published_state(warehouse, key).model_fingerprint
    if recorded is not None and recorded != settings_fingerprint(model_catalogue, key.model, key.reranker):
        raise InputError(f"the settings of {key.model} (its catalogue entry or weights) changed after {key} was "
                         "evaluated, and its re-evaluation is not complete: run `taxo-pipeline materialize` (or let "
                         "`taxo-pipeline dev` rerun it), then classify")  # fmt: skip


def prepare_run(workspace: Workspace, products: Path, choices: Choices) -> CatalogueRun:
    """The catalogue run the evaluation in the workspace's warehouse picks (the leaderboard's best among
    enabled models unless named), with the calibration stored when that approach was scored."""
    products, warehouse = Path(products), workspace.warehouse
    check_file(products)
    model_catalogue = load_catalogue(workspace.settings.models)
    enabled = [spec.id for spec in model_catalogue.enabled()]
    choice = choose(workspace, enabled, choices.approach, choices.model, choices.variant)  # the evaluation is there
    catalogue_fingerprint, taxonomy = file_sha256(products)[:16], load_trimmed_taxonomy(workspace)
    taxonomy_fingerprint = hashlib.sha256("\n".join(taxonomy.paths).encode()).hexdigest()[:16]
    labels = _labels(products, catalogue_fingerprint, choices.shard_size, taxonomy, taxonomy_fingerprint)
    if (preferred := _approach_for(workspace, enabled, choices, labels)) not in (None, choice.key.approach):
        choice = choose(workspace, enabled, preferred, choices.model, choices.variant)
    _check_model_settings(warehouse, model_catalogue, choice.key)
    log.info("classifying with %s (strict hF1 %.3f on the evaluation set)", choice.key, choice.strict_f1)
    calibration = load_calibration(warehouse, choice.key)
    target = choices.target_precision
    threshold = review_threshold(warehouse, choice.key, target) if target is not None else None
    learns = approach_named(choice.key.approach, workspace.settings.approaches).needs_labels
    corrections = load_corrections(workspace)  # validated before anything is classified
    setup, data_dir = workspace.settings, workspace.data_dir
    google = google_mapping(data_dir, setup.google_mapping, setup.google_categories)
    return CatalogueRun(
        products, catalogue_name(products), catalogue_fingerprint, choice.key, calibration, data_dir,
        choices.top_k, choices.shard_size, choices.chunk_size, choices.part, choices.parts, target, threshold,
        corrections_fingerprint(setup.corrections) if learns else NONE, reviews(corrections),
        labels, choices.trust_evaluation, google, taxonomy_fingerprint, learns,
    )  # fmt: skip


@dataclass
class Progress:
    shards: int = 0  # in the catalogue
    products: int = 0
    classified: list[int] = field(default_factory=list)  # shard indices classified by this run
    kept: list[int] = field(default_factory=list)  # already written, unchanged
    classified_products: int = 0
    fingerprints: tuple[str, ...] = ()  # of every shard of the catalogue, in order


def classify_chunk(
    chunk: pl.DataFrame, classify: Classify, top_k: int
) -> tuple[list[list[tuple[str, float]]], list[str | None]]:
    """Per product of the chunk, in its order: its best `top_k` candidates, and why it got none (else None)."""
    result = classify(chunk)
    by_id = dict(zip(result.product_ids, result.ranked, strict=True))
    ids = chunk["product_id"].to_list()
    ranked = [list(by_id.get(product_id, []))[:top_k] for product_id in ids]
    skipped = [None if i in by_id else result.skipped.get(i, "not classified") for i in ids]
    return ranked, skipped


def classify_shard(shard: Shard, run: CatalogueRun, classify: Classify) -> ShardRows:
    ranked: list[list[tuple[str, float]]] = []
    skipped: list[str | None] = []
    for start in range(0, shard.products.height, run.chunk_size):
        chunk_ranked, chunk_skipped = classify_chunk(shard.products.slice(start, run.chunk_size), classify, run.top_k)
        ranked += chunk_ranked
        skipped += chunk_skipped
    ids = shard.products["product_id"].to_list()
    rows = ShardRows(ids, ranked, run.confidence_calibration.confidence(features(ranked)), skipped)
    merchant = run.labels.usable(ids, shard.products["category"].to_list()) if run.labels is not None else ()
    return rows.with_known(reviewed_categories(shard.products, run.reviewed), merchant)


@dataclass(frozen=True)
class ShardOutcome:
    index: int
    path: Path
    products: int
    classified: bool  # False: kept, already written from the same rows and settings
    skipped: int = 0  # products the model gave no prediction
    mean_confidence: float | None = None  # of the model's predictions (not the reviewed products')


def keep_if_done(index: int, fingerprint: str, run: CatalogueRun) -> bool:
    """Shard `index`'s file holds its current rows under the run's settings: keep it, restamped with the
    catalogue's current fingerprint (its rows are unchanged, the file it came from may not be)."""
    path = shard_path(run.directory, index)
    if not is_done(path, fingerprint, run.fingerprint):
        return False
    restamp(path, run.catalogue_fingerprint)
    return True


def run_shard(shard: Shard, run: CatalogueRun, classify: Classify) -> ShardOutcome:
    """One shard, as the command and the Dagster asset run it: kept if done, else classified and written."""
    path, size = shard_path(run.directory, shard.index), shard.products.height
    fingerprint = run.shard_fingerprint(shard)
    if keep_if_done(shard.index, fingerprint, run):
        return ShardOutcome(shard.index, path, size, classified=False)
    if run.learns and run.voters is None:
        raise RuntimeError(f"{run.catalogue}: the catalogue's labels are not learned yet (with_learning)")
    rows = classify_shard(shard, run, classify)
    table = shard_table(run.key, run.catalogue, run.catalogue_fingerprint, shard.index, rows, run.google)
    write_shard(path, with_review(table, run.threshold, run.target_precision), fingerprint, run.fingerprint)
    answered = np.array([bool(r) for r in rows.ranked], dtype=bool)
    by_model = answered & np.array([c is None for c, _ in rows.known], dtype=bool)  # the model's own
    mean = float(rows.confidence[by_model].mean()) if by_model.any() else None
    log.info("shard %d: %d products classified -> %s", shard.index, size, path)
    return ShardOutcome(shard.index, path, size, True, int((~answered).sum()), mean)


def in_part(index: int, run: CatalogueRun) -> bool:
    return index % run.parts == run.part


def plan_shards(run: CatalogueRun) -> tuple[Progress, list[int]]:
    """Validate the whole catalogue (InputError before anything is written), then what a run of this
    part would do without classifying: unchanged shards are kept (and counted in the progress), the
    others returned as pending; files beyond the catalogue go."""
    check = validate_catalogue(run.products, run.shard_size, run.shard_fingerprint)
    progress, pending = Progress(check.shards, check.products, fingerprints=check.fingerprints), []
    for index, fingerprint in enumerate(check.fingerprints):
        if not in_part(index, run):
            continue
        if keep_if_done(index, fingerprint, run):
            progress.kept.append(index)
        else:
            pending.append(index)
    _remove_beyond(run, progress.shards)
    return progress, pending


def classify_catalogue(run: CatalogueRun, progress: Progress, pending: list[int], classify: Classify) -> None:
    """Classify the pending shards plan_shards found, reading the validated catalogue up to the last."""
    for shard in read_shards(run.products, run.shard_size) if pending else ():
        if shard.index in pending:
            _count(progress, run_shard(shard, run, classify))
        if shard.index >= pending[-1]:
            break


def publish_run(run: CatalogueRun, fingerprints: tuple[str, ...]) -> Path | None:
    """The snapshot of the catalogue's shards the view shows, published now if every shard is written
    (by any part); None while some are not."""
    if snapshot := publish(run.directory, fingerprints, run.fingerprint, run.catalogue_fingerprint):
        log.info("%s: %d shards published to the classifications view", run.catalogue, len(fingerprints))
    return snapshot


def find_shard(run: CatalogueRun, index: int) -> tuple[Shard, CatalogueCheck]:
    """Shard `index` of the catalogue, once the whole catalogue is validated."""
    check = validate_catalogue(run.products, run.shard_size, run.shard_fingerprint)
    if index >= check.shards:
        raise InputError(f"products file {run.products} has {check.shards} shards of {run.shard_size} products: "
                         f"shard {shard_key(index)} is not one of them")  # fmt: skip
    return next(s for s in read_shards(run.products, run.shard_size) if s.index == index), check


def _count(progress: Progress, outcome: ShardOutcome) -> None:
    if outcome.classified:
        progress.classified.append(outcome.index)
        progress.classified_products += outcome.products
    else:
        progress.kept.append(outcome.index)


def _remove_beyond(run: CatalogueRun, shards: int) -> None:
    if stale := remove_beyond(run.directory, shards):
        log.info("removed %d shard files beyond the catalogue's %d shards", len(stale), shards)


def labels_summary(run: CatalogueRun) -> list[str]:
    """What the catalogue's own labels gave the run, and where its confidence comes from."""
    labels, lines = run.labels, []
    if labels is not None and labels.count:
        lines += labels.report()
    elif labels is not None and labels.unrecognised:
        lines += labels.report()[1:]
    if run.learned is not None:
        f = run.learned.figures()
        lines.append(f"learned from the catalogue's {f['labelled']} labelled products ({FOLDS}-fold cross-fitting, each "
                     f"fold scored by weights and a calibration chosen on the others): exact accuracy "
                     f"{f['exact_accuracy']:.3f}, L1 accuracy {f['l1_accuracy']:.3f}, ECE {f['ece']:.3f} ({ECE_BINS} "
                     f"bins), largest decile gap {f['max_decile_gap']:.3f}; vote weight {f['vote_weight']:g}, "
                     f"category prior {f['prior_weight']:g}, evaluation's votes x{f['pool_scale']:g}, calibration "
                     f"{f['calibration']}")  # fmt: skip
    elif run.learns and run.voters is not None:
        lines.append(f"{run.labels.count} labelled products are too few to learn from (fewer than {MIN_LABELLED}, or "
                     "all in one fold): they vote with a fixed weight, and the confidence is the evaluation's, "
                     "unconfirmed here")  # fmt: skip
    elif run.learns:
        lines.append("the catalogue's labels were not learned in this run (nothing to classify): rerun without "
                     "--dagster to see what they teach")  # fmt: skip
    elif labels is not None and labels.count:
        lines.append(f"{run.key.approach} does not learn from labels: the labelled products only keep their category "
                     "(label-transfer learns from them)")  # fmt: skip
    else:
        lines.append("no product carries a category of its own: the confidence is calibrated on the evaluation's "
                     "products, unconfirmed on this catalogue")  # fmt: skip
    if run.reviews_everything:
        fix = (f"give at least {MIN_LABELLED} products their category (a `category` column, or `Product Category` "
               "in a Shopify export) to learn its own threshold" if not run.labels or run.labels.count < MIN_LABELLED
               else "classify with --approach label-transfer, which learns it from the catalogue's labels")  # fmt: skip
        lines.append(f"--target-precision {run.target_precision}: every product goes to review, since this catalogue "
                     f"cannot confirm the calibration; {fix}, or pass --trust-evaluation for a catalogue like the "
                     "evaluation's products")  # fmt: skip
    calibration = run.confidence_calibration
    where = "this catalogue's labelled products" if run.confirmed else "the evaluation's products"
    lines += [f"confidence: {calibration.method} calibration fitted on {calibration.products} of {where}; held-out "
              "reliability: confidence range, products, predicted, observed"]  # fmt: skip
    bins = deciles(run.learned.confidence, run.learned.correct[:, 2].astype(float)) if run.learned else calibration.reliability
    lines += [f"  {b['low']:.2f}-{b['high']:.2f}\t{b['products']}\t{b['predicted']:.3f}\t{b['observed']:.3f}" for b in bins]
    return lines
