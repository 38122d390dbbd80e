"""One job per partitioning, so a run (from the UI, the sensor or a schedule) targets one partition."""

import dagster as dg

from taxo_pipeline.assets.partitions import model_variant, nli_models, reranker_retriever
from taxo_pipeline.assets.plan import (
    ENCODER_JOB,
    IMAGE_RETRIEVAL_ASSETS,
    IMPROVED_ASSETS,
    NLI_ASSETS,
    NLI_JOB,
    RERANKING_ASSETS,
    RERANKING_JOB,
    TEXT_RETRIEVAL_ASSETS,
)

encoder_evaluation = dg.define_asset_job(
    ENCODER_JOB, selection=list(dict.fromkeys(TEXT_RETRIEVAL_ASSETS + IMAGE_RETRIEVAL_ASSETS + IMPROVED_ASSETS)), partitions_def=model_variant,
    description="Category index, text and image retrieval for one model x variant.",
)
nli_evaluation = dg.define_asset_job(
    NLI_JOB, selection=list(NLI_ASSETS), partitions_def=nli_models, description="Zero-shot NLI for one model."
)
reranking_evaluation = dg.define_asset_job(
    RERANKING_JOB, selection=list(RERANKING_ASSETS), partitions_def=reranker_retriever,
    description="Rerank one retriever's candidates with one reranker.",
)
jobs = [encoder_evaluation, nli_evaluation, reranking_evaluation]
