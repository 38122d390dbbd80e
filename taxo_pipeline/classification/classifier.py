"""The approach of a catalogue run wired to the models: a function that classifies one chunk of products
through an SIE client, with the taxonomy, the full taxonomy for full-depth documents, and the labelled
evaluation products and the reviewers' corrections (TAXO_CORRECTIONS) for approaches that learn from labels. The command, the Dagster asset and the
classification service share it."""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from taxo_pipeline.approaches.evidence import workspace_evidence
from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.spec import Approach, Classified, ClassifyRequest
from taxo_pipeline.classification.catalogue_labels import (
    LEARNING_LOCK,
    learn_from_catalogue,
    load_learning,
    save_learning,
    save_record,
    saved_about,
)
from taxo_pipeline.classification.run import CatalogueRun, Classify
from taxo_pipeline.dataset.tables import load_corrections, load_experiment, load_trimmed_taxonomy
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.locks import LockTimeoutError, file_lock
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.workspace import Workspace


def classify_request(
    key: ResultKey, workspace: Workspace, client: InferenceClient, top_k: int
) -> tuple[Approach, ClassifyRequest]:
    """The key's approach and a request for it with no products yet: the taxonomy, the evidence (models,
    category documents and index) and the labelled pool when the approach learns from labels."""
    approach = approach_named(key.approach, workspace.settings.approaches)
    taxonomy = load_trimmed_taxonomy(workspace)
    family = {spec.id: spec.family for spec in load_catalogue(workspace.settings.models)}.get(key.model, "text")
    evidence = workspace_evidence(workspace, client, taxonomy, key.variant)
    request = ClassifyRequest(
        pl.DataFrame(), taxonomy, evidence, key.model, key.variant, family, key.reranker, top_k,
        approach.batch_size, labelled=load_experiment(workspace) if approach.needs_labels else None,
        corrections=load_corrections(workspace) if approach.needs_labels else None,
    )  # fmt: skip
    return approach, request


def cached_learning(run: CatalogueRun) -> CatalogueRun:
    """The run with what an earlier run learned from the same labels and settings, where it saved it."""
    if not run.learns or run.voters is not None or (saved := load_learning(run.directory, run.learning_fingerprint)) is None:
        return run
    return run.with_learning(*saved)


def learned_run(run: CatalogueRun, workspace: Workspace, client: InferenceClient) -> CatalogueRun:
    """The run with what the catalogue's own labels teach (catalogue_labels.py), learned now unless saved; the
    saved record names this run's target precision and threshold."""
    run = cached_learning(run)
    if not run.learns:
        return run
    about = {"catalogue": run.catalogue, **run.key.columns, "products": str(run.products),
             "target_precision": run.target_precision, "review_threshold": run.threshold}  # fmt: skip
    if run.voters is None:
        run = _learn_once(run, workspace, client, about)
    elif saved_about(run.directory) != about:
        save_record(run.directory, run.learning_fingerprint, run.labels, run.learned, about)
    return run


def _learn_once(run: CatalogueRun, workspace: Workspace, client: InferenceClient, about: dict) -> CatalogueRun:
    """Learn under the run folder's lock: concurrent shard runs and parts of one catalogue wait for the first
    and read what it saved, rather than each encoding and cross-fitting every labelled product. Learning may
    outlast the lock timeout; a waiter then waits again (the kernel frees the lock if the learner dies)."""
    run.directory.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            with file_lock(run.directory / LEARNING_LOCK):
                if (learned := cached_learning(run)).voters is not None:
                    return learned
                _, request = classify_request(run.key, workspace, client, run.top_k)
                run = run.with_learning(*learn_from_catalogue(request, run.labels))
                save_learning(run.directory, run.learning_fingerprint, run.labels, run.voters, run.learned,
                              {**about, "review_threshold": run.threshold})  # fmt: skip
                return run
        except LockTimeoutError:
            continue


def catalogue_classifier(run: CatalogueRun, workspace: Workspace, client: InferenceClient) -> Classify:
    approach, request = classify_request(run.key, workspace, client, run.top_k)
    request = replace(request, voters=run.voters)

    def classify(chunk: pl.DataFrame) -> Classified:
        return approach.classify(replace(request, products=chunk))

    return classify
