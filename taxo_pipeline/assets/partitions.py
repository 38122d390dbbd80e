"""Partitions keyed by model ids, kept in sync with the catalogue: model x variant for the encoders,
one per NLI model, and reranker x retriever for reranking."""

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

# Which catalogue families each dynamic model dimension holds.
FAMILIES_BY_PARTITIONS = {
    encoder_models.name: ("text", "image"),
    nli_models.name: ("nli",),
    rerank_models.name: ("rerank",),
}


def enabled_models(catalogue: Catalogue, *families: str) -> list[str]:
    return sorted(spec.id for spec in catalogue if spec.enabled and spec.family in families)


def enabled_encoders(catalogue: Catalogue) -> list[str]:
    return enabled_models(catalogue, *FAMILIES_BY_PARTITIONS[encoder_models.name])


def missing_model_partitions(instance: dg.DagsterInstance, catalogue: Catalogue) -> dict[str, list[str]]:
    """Per dynamic partitions definition, the enabled models it does not hold yet."""
    missing = {}
    for name, families in FAMILIES_BY_PARTITIONS.items():
        known = set(instance.get_dynamic_partitions(name))
        if new := [m for m in enabled_models(catalogue, *families) if m not in known]:
            missing[name] = new
    return missing


def partition_keys(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], keys["variant"]
