"""Model fingerprints: one partitioned observable source per model dimension. Its data version per
model is the model's fingerprint (catalogue entry, weights package version, weight files), so the
eager assets downstream recompute only the partitions of a model whose fingerprint changed.

`model_partitions_sensor` records the observations every minute; "Observe sources" in the UI does
the same through the functions below.
"""

from collections.abc import Iterable

import dagster as dg

from taxo_pipeline.defs.models.partitions import encoder_models, nli_models, rerank_models
from taxo_pipeline.sie.model_catalogue import Catalogue, fingerprint, load_catalogue

GROUP = "models"


def model_fingerprints(catalogue: Catalogue, model_ids: Iterable[str]) -> dict[str, str]:
    """{model id: fingerprint} for the ids still in the catalogue."""
    known = {spec.id: spec for spec in catalogue}
    return {model: fingerprint(known[model]) for model in model_ids if model in known}


def _fingerprint_source(partitions_def: dg.DynamicPartitionsDefinition) -> dg.SourceAsset:
    name = partitions_def.name

    @dg.observable_source_asset(
        name=f"{name}_fingerprint",
        partitions_def=partitions_def,
        group_name=GROUP,
        description=f"Fingerprint of each {name} in models.yaml: its entry and its weight files.",
    )
    def observe(context: dg.OpExecutionContext) -> dg.DataVersionsByPartition:
        models = context.instance.get_dynamic_partitions(name)
        found = model_fingerprints(load_catalogue(), models)
        return dg.DataVersionsByPartition({model: dg.DataVersion(value) for model, value in found.items()})

    return observe


encoder_model_fingerprint = _fingerprint_source(encoder_models)
nli_model_fingerprint = _fingerprint_source(nli_models)
rerank_model_fingerprint = _fingerprint_source(rerank_models)
FINGERPRINT_SOURCES = {
    encoder_models.name: encoder_model_fingerprint,
    nli_models.name: nli_model_fingerprint,
    rerank_models.name: rerank_model_fingerprint,
}
