"""The data job (the weekly schedule runs it), and one job per partitioning so a run targets one partition."""

import dagster as dg

from taxo_pipeline.assets.plan import (
    DATA_ASSETS,
    DATA_JOB,
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
    ENCODER_JOB, selection=list(dict.fromkeys(TEXT_RETRIEVAL_ASSETS + IMAGE_RETRIEVAL_ASSETS + IMPROVED_ASSETS)),
    description="Category index, text and image retrieval for one model x variant.",
)
nli_evaluation = dg.define_asset_job(
    NLI_JOB, selection=list(NLI_ASSETS), description="Zero-shot NLI for one model."
)
reranking_evaluation = dg.define_asset_job(
    RERANKING_JOB, selection=list(RERANKING_ASSETS),
    description="Rerank one retriever's candidates with one reranker.",
)
data_refresh = dg.define_asset_job(
    DATA_JOB, selection=list(DATA_ASSETS), description="Read the sources again and rebuild the cleaned and L3 tables."
)
jobs = [data_refresh, encoder_evaluation, nli_evaluation, reranking_evaluation]
