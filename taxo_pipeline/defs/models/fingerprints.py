"""Model fingerprints: one partitioned observable source per model dimension. Its data version per
model is the model's fingerprint (catalogue entry, weights package version, weight files), so the
eager assets downstream recompute only the partitions of a model whose fingerprint changed. A fine-tuned
entry has a second one, of what its training reads (its base, its `train:` block, TAXO_TRAINING_PRODUCTS,
the corrections): when it changes, its encoder is trained again.

`model_partitions_sensor` records the observations every minute; "Observe sources" in the UI does
the same through the functions below.
"""

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable

import dagster as dg

from taxo_pipeline.dataset.corrections import corrections_fingerprint
from taxo_pipeline.defs.models.partitions import encoder_models, nli_models, rerank_models, trained_encoders
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.files import file_sha256
from taxo_pipeline.sie.model_catalogue import Catalogue, fingerprint, load_catalogue
from taxo_pipeline.workspace import Workspace

GROUP = "models"


def model_fingerprints(workspace: Workspace, catalogue: Catalogue, model_ids: Iterable[str]) -> dict[str, str]:
    """{model id: fingerprint} for the ids still in the catalogue."""
    known = {spec.id: spec for spec in catalogue}
    return {model: fingerprint(known[model]) for model in model_ids if model in known}


def training_fingerprints(workspace: Workspace, catalogue: Catalogue, model_ids: Iterable[str]) -> dict[str, str]:
    """{fine-tuned model id: the fingerprint of what its training reads} for the ids still to train. Not its
    own weights: those are what the training writes. A missing training file is read as none, and the
    training run names it."""
    known = {spec.id: spec for spec in catalogue.to_train()}
    wanted = [m for m in model_ids if m in known]
    if not wanted:  # nothing to train: the files and corrections are not read (a bad one is the training's error)
        return {}
    settings = workspace.settings
    files = [[str(f), file_sha256(f) if f.is_file() else None] for f in settings.training_products]
    shared = {"files": files, "corrections": corrections_fingerprint(settings.corrections),
              "max_text_chars": settings.max_text_chars}  # fmt: skip
    found = {}
    for model in wanted:
        spec = known[model]
        parts = {**shared, "base": fingerprint(catalogue[spec.train.base]), "train": dataclasses.asdict(spec.train)}
        found[model] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return found


Fingerprints = Callable[[Workspace, Catalogue, Iterable[str]], dict[str, str]]


def _fingerprint_source(partitions_def: dg.DynamicPartitionsDefinition, fingerprints: Fingerprints, name: str,
                        description: str) -> dg.SourceAsset:  # fmt: skip
    @dg.observable_source_asset(name=name, partitions_def=partitions_def, group_name=GROUP, description=description)
    def observe(context: dg.OpExecutionContext, storage: WorkspaceResource) -> dg.DataVersionsByPartition:
        models = context.instance.get_dynamic_partitions(partitions_def.name)
        workspace = storage.workspace()
        found = fingerprints(workspace, load_catalogue(workspace.settings.models), models)
        return dg.DataVersionsByPartition({model: dg.DataVersion(value) for model, value in found.items()})

    return observe


def _model_source(partitions_def: dg.DynamicPartitionsDefinition) -> dg.SourceAsset:
    return _fingerprint_source(partitions_def, model_fingerprints, f"{partitions_def.name}_fingerprint",
                               f"Fingerprint of each {partitions_def.name} in models.yaml: its entry and its weight files.")  # fmt: skip


encoder_model_fingerprint = _model_source(encoder_models)
nli_model_fingerprint = _model_source(nli_models)
rerank_model_fingerprint = _model_source(rerank_models)
training_inputs = _fingerprint_source(
    trained_encoders, training_fingerprints, "training_inputs",
    "What each fine-tuned entry's training reads: its base model, its train: block, the files in "
    "TAXO_TRAINING_PRODUCTS and the corrections (the evaluation's dev part is the products_experiment asset).",
)  # fmt: skip
FINGERPRINT_SOURCES = {
    encoder_models.name: encoder_model_fingerprint,
    nli_models.name: nli_model_fingerprint,
    rerank_models.name: rerank_model_fingerprint,
    trained_encoders.name: training_inputs,
}


def fingerprints_of(partitions_name: str) -> Fingerprints:
    """How the values of that partitions definition's fingerprint source are computed."""
    return training_fingerprints if partitions_name == trained_encoders.name else model_fingerprints
