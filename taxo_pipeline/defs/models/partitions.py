"""Partitions keyed by model ids, kept in sync with the catalogue: model x category-document variant for
the encoders, one per encoder (approaches that name the documents they read), one per NLI model, and reranker x retriever for
reranking. Each approach's `partitioning` names one of them (taxo_pipeline/approaches/spec.py)."""

from dataclasses import dataclass

import dagster as dg

from taxo_pipeline.approaches.spec import MODEL, MODEL_VARIANT, NLI_MODEL, RERANKER_RETRIEVER
from taxo_pipeline.retrieval.variants import VARIANTS
from taxo_pipeline.sie.model_catalogue import Catalogue

# One dynamic set of model ids for every encoder family (text and image), so a model added to the
# catalogue adds its partitions everywhere at once.
encoder_models = dg.DynamicPartitionsDefinition(name="encoder_model")
variants = dg.StaticPartitionsDefinition(list(VARIANTS))
model_variant = dg.MultiPartitionsDefinition({"model": encoder_models, "variant": variants})
nli_models = dg.DynamicPartitionsDefinition(name="nli_model")
# The fine-tuned entries (models.yaml's `train:` blocks) that are enabled: their encoder's training runs. Once
# trained, a fine-tuned model is an encoder_model like any other.
trained_encoders = dg.DynamicPartitionsDefinition(name="trained_encoder")
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


def enabled_by_partitions(catalogue: Catalogue) -> dict[str, list[str]]:
    """{dynamic partitions definition: the enabled model ids it should hold}."""
    found = {name: sorted(spec.id for spec in catalogue.enabled() if spec.family in families)
             for name, families in FAMILIES_BY_PARTITIONS.items()}  # fmt: skip
    found[trained_encoders.name] = sorted(spec.id for spec in catalogue.to_train())
    return found


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


PARTITIONS: dict[str, dg.PartitionsDefinition] = {
    MODEL_VARIANT: model_variant,
    MODEL: encoder_models,
    NLI_MODEL: nli_models,
    RERANKER_RETRIEVER: reranker_retriever,
}
# How a partition of the first partitioning reads partitions of the second (identity where they match).
_MAPPINGS: dict[tuple[str, str], dg.PartitionMapping] = {
    (MODEL, MODEL_VARIANT): MODEL_DIMENSION,
    (MODEL_VARIANT, MODEL): MODEL_DIMENSION,
    (RERANKER_RETRIEVER, MODEL_VARIANT): RETRIEVER_TO_MODEL,
    (RERANKER_RETRIEVER, MODEL): dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="retriever"),
}


def partition_mapping(child: str, parent: str) -> dg.PartitionMapping | None:
    if child == parent:
        return None
    if (child, parent) not in _MAPPINGS:
        raise ValueError(f"a {child} partition cannot read {parent} partitions")
    return _MAPPINGS[child, parent]


@dataclass(frozen=True)
class PartitionModels:
    model: str  # the model that classifies or retrieves
    variant: str | None  # None: the partitioning has no variant dimension
    reranker: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        """The model ids a run of this partition calls."""
        return (self.model, self.reranker) if self.reranker else (self.model,)


def partition_models(partitioning: str, partition_key: str | dg.MultiPartitionKey) -> PartitionModels:
    if partitioning in (MODEL, NLI_MODEL):
        return PartitionModels(str(partition_key), None)
    if not isinstance(partition_key, dg.MultiPartitionKey):  # e.g. "model|variant" from a run's tags
        partition_key = PARTITIONS[partitioning].get_partition_key_from_str(partition_key)
    keys = partition_key.keys_by_dimension
    if partitioning == MODEL_VARIANT:
        return PartitionModels(keys["model"], keys["variant"])
    return PartitionModels(keys["retriever"], None, keys["reranker"])


def partition_key(partitioning: str, models: PartitionModels) -> str | dg.MultiPartitionKey:
    if partitioning in (MODEL, NLI_MODEL):
        return models.model
    if partitioning == MODEL_VARIANT:
        return dg.MultiPartitionKey({"model": models.model, "variant": models.variant})
    return dg.MultiPartitionKey({"reranker": models.reranker, "retriever": models.model})


def dynamic_partitions(partitioning: str, models: PartitionModels) -> dict[str, list[str]]:
    """{dynamic partitions definition: keys} a run of this partition needs to exist."""
    if partitioning == NLI_MODEL:
        return {nli_models.name: [models.model]}
    if partitioning == RERANKER_RETRIEVER:
        return {rerank_models.name: [models.reranker], encoder_models.name: [models.model]}
    return {encoder_models.name: [models.model]}
