"""Partitions: model x variant, the model dimension dynamic and kept in sync with the catalogue."""

import dagster as dg

from taxo_pipeline.retrieval.categories import VARIANTS
from taxo_pipeline.sie.catalogue import Catalogue

# One dynamic set of model ids for every encoder family (text and image), so a model added to the
# catalogue adds its partitions everywhere at once.
encoder_models = dg.DynamicPartitionsDefinition(name="encoder_model")
variants = dg.StaticPartitionsDefinition(list(VARIANTS))
model_variant = dg.MultiPartitionsDefinition({"model": encoder_models, "variant": variants})

ENCODER_FAMILIES = ("text", "image")


def enabled_encoders(catalogue: Catalogue) -> list[str]:
    return sorted(spec.id for spec in catalogue if spec.enabled and spec.family in ENCODER_FAMILIES)


def missing_model_partitions(instance: dg.DagsterInstance, catalogue: Catalogue) -> list[str]:
    known = set(instance.get_dynamic_partitions(encoder_models.name))
    return [m for m in enabled_encoders(catalogue) if m not in known]


def partition_keys(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], keys["variant"]
