"""Retrieval + reranking (reranker x retriever): the retriever's stored top-k categories rescored
with a cross-encoder's `score`, one call per product; the prediction is the best score."""

import dagster as dg
from pydantic import Field

from taxo_pipeline.assets.model_fingerprints import rerank_model_fingerprint
from taxo_pipeline.assets.partitions import RERANKER_DIMENSION, RETRIEVER_TO_MODEL, reranker_retriever
from taxo_pipeline.assets.retrieval_steps import score_top1
from taxo_pipeline.assets.text_retrieval import APPROACH as RETRIEVAL_APPROACH
from taxo_pipeline.assets.text_retrieval import text_retrieval_predictions
from taxo_pipeline.evaluation.store import Partition, candidates_with_queries, save_latencies, save_predictions
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.retrieval.categories import VARIANTS
from taxo_pipeline.sie.resource import SIEResource

APPROACH = "reranking"
GROUP = "reranking"
STAGE = "rerank"


class RerankingConfig(dg.Config):
    variant: str = Field(default="full-path", description=f"Which retrieval variant to rerank: {', '.join(VARIANTS)}.")
    top_k: int = Field(default=5, description="Retrieved candidates rescored per product.")


def reranking_partition(context: dg.AssetExecutionContext, variant: str) -> tuple[Partition, Partition]:
    """(the retrieval partition read, the reranking partition written): the model column names
    the pair like the reference's table, `retriever + reranker`."""
    keys = context.partition_key.keys_by_dimension
    retriever, reranker = keys["retriever"], keys["reranker"]
    return Partition(RETRIEVAL_APPROACH, retriever, variant), Partition(APPROACH, f"{retriever} + {reranker}", variant)


@dg.asset(
    partitions_def=reranker_retriever,
    group_name=GROUP,
    deps=[
        dg.AssetDep(text_retrieval_predictions, partition_mapping=RETRIEVER_TO_MODEL),
        dg.AssetDep(rerank_model_fingerprint, partition_mapping=RERANKER_DIMENSION),
    ],
    code_version="1",
)
def reranking_predictions(
    context: dg.AssetExecutionContext, config: RerankingConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """Candidates reordered by the reranker's score, best first."""
    if config.variant not in VARIANTS:
        raise ValueError(f"unknown variant {config.variant!r}: expected one of {', '.join(VARIANTS)}")
    retrieval, partition = reranking_partition(context, config.variant)
    reranker = context.partition_key.keys_by_dimension["reranker"]
    warehouse = storage.warehouse()
    products = candidates_with_queries(warehouse, retrieval, config.top_k)
    if products.height == 0:
        raise RuntimeError(f"no {retrieval.approach} predictions for {retrieval.model} {retrieval.variant}: materialize them first")
    if (short := products.filter(products["candidates"].list.len() < config.top_k)).height:
        raise RuntimeError(
            f"{retrieval.model} {retrieval.variant} stored fewer than {config.top_k} candidates for "
            f"{short.height} products: rerun text retrieval with top_k >= {config.top_k}"
        )
    candidates = products["candidates"].to_list()
    with sie.client(logger=context.log) as client:
        scores = client.score_many(reranker, products["description"].to_list(), candidates, batch_size=config.top_k)
        requests = client.latencies
    ranked = [
        sorted(zip(paths, map(float, values)), key=lambda pair: pair[1], reverse=True)
        for paths, values in zip(candidates, scores)
    ]
    reordered = sum(1 for paths, order in zip(candidates, ranked) if order[0][0] != paths[0])
    rows = save_predictions(warehouse, partition, products["product_id"].to_list(), ranked)
    save_latencies(warehouse, partition, STAGE, requests)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "products": products.height,
            "top1_changed_by_reranker": reordered,
            "sie_requests": len(requests),
            "model": partition.model,
            "variant": config.variant,
        }
    )


@dg.asset(partitions_def=reranker_retriever, group_name=GROUP, deps=[reranking_predictions], code_version="1")
def reranking_metrics(
    context: dg.AssetExecutionContext, config: RerankingConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Strict and lenient hierarchical and macro metrics of the reranked top-1, into `metrics`."""
    return score_top1(storage, reranking_partition(context, config.variant)[1], stage=STAGE)
