"""Partitions keyed by model ids, kept in sync with the catalogue: model x variant for the encoders,
one per NLI model, and reranker x retriever for reranking."""

from dataclasses import dataclass

import dagster as dg

from taxo_pipeline.retrieval.categories import VARIANTS
from taxo_pipeline.sie.catalogue import Catalogue

# One dynamic set of model ids for every encoder family (text and image), so a model added to the
# catalogue adds its partitions everywhere at once.
encoder_models = dg.DynamicPartitionsDefinition(name="encoder_model")
variants = dg.StaticPartitionsDefinition(list(VARIANTS))
model_variant = dg.MultiPartitionsDefinition({"model": encoder_models, "variant": variants})
nli_models = dg.DynamicPartitionsDefinition(name="nli_model")
rerank_models = dg.DynamicPartitionsDefinition(name="rerank_model")
# The retriever dimension shares encoder_models, so it maps one-to-one onto retrieval partitions.
reranker_retriever = dg.MultiPartitionsDefinition({"reranker": rerank_models, "retriever": encoder_models})
RETRIEVER_TO_MODEL = dg.MultiPartitionMapping(
    {"model": dg.DimensionPartitionMapping("retriever", dg.IdentityPartitionMapping())}
)
# A model's fingerprint (one dynamic dimension) onto the partitions that use the model.
MODEL_DIMENSION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model")
RERANKER_DIMENSION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="reranker")

# Which catalogue families each dynamic model dimension holds.
FAMILIES_BY_PARTITIONS = {
    encoder_models.name: ("text", "image"),
    nli_models.name: ("nli",),
    rerank_models.name: ("rerank",),
}


def enabled_models(catalogue: Catalogue, *families: str) -> list[str]:
    return sorted(spec.id for spec in catalogue if spec.enabled and spec.family in families)


def enabled_by_partitions(catalogue: Catalogue) -> dict[str, list[str]]:
    """{dynamic partitions definition: the enabled model ids it should hold}."""
    return {name: enabled_models(catalogue, *families) for name, families in FAMILIES_BY_PARTITIONS.items()}


@dataclass(frozen=True)
class PartitionChanges:
    add: dict[str, list[str]]  # {dynamic partitions definition: model ids}
    remove: dict[str, list[str]]


def model_partition_changes(instance: dg.DagsterInstance, catalogue: Catalogue) -> PartitionChanges:
    """What brings the dynamic model partitions in line with the catalogue: enabled models are
    added; disabled or removed ones leave future runs (their warehouse rows and run history stay)."""
    add, remove = {}, {}
    for name, enabled in enabled_by_partitions(catalogue).items():
        known = instance.get_dynamic_partitions(name)
        if new := [m for m in enabled if m not in known]:
            add[name] = new
        if gone := [m for m in known if m not in enabled]:
            remove[name] = gone
    return PartitionChanges(add, remove)


def partition_keys(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], keys["variant"]
