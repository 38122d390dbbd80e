"""Text retrieval (model x variant): product descriptions queried against the category index."""

import dagster as dg
import numpy as np
from pydantic import Field

from taxo_pipeline.assets.category_index import category_embeddings
from taxo_pipeline.assets.dataset import load_experiment, products_experiment_l3
from taxo_pipeline.assets.metadata import metrics_metadata
from taxo_pipeline.assets.partitions import model_variant, partition_keys
from taxo_pipeline.evaluation.metrics import evaluate_paths
from taxo_pipeline.evaluation.store import (
    Partition,
    latency,
    save_latencies,
    save_metrics,
    save_predictions,
    top1_with_truth,
)
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.catalogue import model_slug
from taxo_pipeline.sie.resource import SIEResource

APPROACH = "text-retrieval"
GROUP = "text_retrieval"
QUERY_STAGE = "query_encode"


class RetrievalConfig(dg.Config):
    top_k: int = Field(default=5, description="Candidates stored per product.")
    limit: int | None = Field(default=None, description="Evaluate only the first N products.")
    batch_size: int = Field(default=8, description="Products per encode request (the reference used 8).")


@dg.asset(
    partitions_def=model_variant, group_name=GROUP, deps=[products_experiment_l3, category_embeddings], code_version="1"
)
def text_retrieval_predictions(
    context: dg.AssetExecutionContext, config: RetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """Top-k categories per product: its description encoded as a query, nearest category documents."""
    model, variant = partition_keys(context)
    products = load_experiment(storage)
    if config.limit is not None:
        products = products.head(config.limit)
    with sie.client(logger=context.log) as client:
        encoded = client.encode_detailed(
            model, products["product_description"].to_list(), is_query=True, batch_size=config.batch_size
        )
        requests_made = client.request_count
    matches = CategoryIndex(storage.index_path(), model_slug(model), variant).query(encoded.vectors, config.top_k)
    partition = Partition(APPROACH, model, variant)
    warehouse = storage.warehouse()
    rows = save_predictions(
        warehouse, partition, products["product_id"].to_list(), [[(m.path, 1.0 - m.distance) for m in ms] for ms in matches]
    )
    save_latencies(warehouse, partition, QUERY_STAGE, encoded.requests)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "products": products.height,
            "top_k": config.top_k,
            "from_embedding_cache": int(np.count_nonzero(encoded.from_cache)),
            "sie_requests": requests_made,
        }
    )


@dg.asset(partitions_def=model_variant, group_name=GROUP, deps=[text_retrieval_predictions], code_version="1")
def text_retrieval_metrics(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Strict and lenient hierarchical P/R/F1 and macro L1/L2/L3, with query latency, into `metrics`."""
    model, variant = partition_keys(context)
    partition = Partition(APPROACH, model, variant)
    warehouse = storage.warehouse()
    scored = top1_with_truth(warehouse, partition)
    result = evaluate_paths(
        scored["prediction"].to_list(), scored["ground_truth_category"].to_list(),
        scored["potential_product_categories"].to_list(),
    )
    latency_block = latency(warehouse, partition, QUERY_STAGE)
    save_metrics(warehouse, partition, result, scored.height, latency_block)
    return dg.MaterializeResult(metadata=metrics_metadata(result, scored.height, latency_block))
