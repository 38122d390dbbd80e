"""Which runs evaluate the enabled models: one per partition, each with the assets that partition
needs. The main job (`taxo-pipeline materialize`) runs the plan."""

from dataclasses import dataclass

import dagster as dg

from taxo_pipeline.assets.partitions import (
    FAMILIES_BY_PARTITIONS,
    enabled_models,
    encoder_models,
    nli_models,
    rerank_models,
)
from taxo_pipeline.retrieval.categories import VARIANTS
from taxo_pipeline.sie.catalogue import Catalogue

DATA_ASSETS = ("raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_l3", "products_experiment_l3")
TEXT_RETRIEVAL_ASSETS = ("category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics")
IMAGE_RETRIEVAL_ASSETS = ("category_embeddings", "image_retrieval_predictions", "image_retrieval_metrics")
IMPROVED_ASSETS = ("title_description_retrieval", "score_fusion_retrieval", "hierarchical_cascade_retrieval", "label_transfer_retrieval")
NLI_ASSETS = ("nli_predictions", "nli_metrics")
RERANKING_ASSETS = ("reranking_predictions", "reranking_metrics")
DATA_JOB, ENCODER_JOB, NLI_JOB, RERANKING_JOB = "data_refresh", "encoder_evaluation", "nli_evaluation", "reranking_evaluation"


def model_variant_key(model: str, variant: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "variant": variant})


def reranking_key(reranker: str, retriever: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"reranker": reranker, "retriever": retriever})


@dataclass(frozen=True)
class PlannedRun:
    job: str
    selection: tuple[str, ...]
    partition_key: str
    models: tuple[str, ...]  # the model ids the run needs served


def evaluation_plan(catalogue: Catalogue) -> list[PlannedRun]:
    """Every partition of the enabled models, retrieval before the reranking that reads it."""
    encoders = enabled_models(catalogue, *FAMILIES_BY_PARTITIONS[encoder_models.name])
    runs = []
    for model in encoders:
        assets = TEXT_RETRIEVAL_ASSETS + (IMAGE_RETRIEVAL_ASSETS[1:] if catalogue[model].family == "image" else ()) + IMPROVED_ASSETS
        runs += [
            PlannedRun(ENCODER_JOB, assets, model_variant_key(model, variant), (model,))
            for variant in VARIANTS
        ]
    runs += [
        PlannedRun(NLI_JOB, NLI_ASSETS, model, (model,))
        for model in enabled_models(catalogue, *FAMILIES_BY_PARTITIONS[nli_models.name])
    ]
    runs += [
        PlannedRun(RERANKING_JOB, RERANKING_ASSETS, reranking_key(reranker, retriever), (retriever, reranker))
        for reranker in enabled_models(catalogue, *FAMILIES_BY_PARTITIONS[rerank_models.name])
        for retriever in encoders
    ]
    return runs
