"""Text retrieval (model x variant): product descriptions queried against the category index."""

import dagster as dg

from taxo_pipeline.assets.category_index import category_embeddings
from taxo_pipeline.assets.dataset import load_experiment, products_experiment_l3
from taxo_pipeline.assets.partitions import model_variant, partition_keys
from taxo_pipeline.assets.retrieval_steps import RetrievalConfig, retrieve_and_store, score_top1
from taxo_pipeline.evaluation.store import Partition
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.resource import SIEResource

APPROACH = "text-retrieval"
GROUP = "text_retrieval"


@dg.asset(
    partitions_def=model_variant, group_name=GROUP, deps=[products_experiment_l3, category_embeddings], code_version="1"
)
def text_retrieval_predictions(
    context: dg.AssetExecutionContext, config: RetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """Top-k categories per product: its description encoded as a query, nearest category documents."""
    products = load_experiment(storage)
    if config.limit is not None:
        products = products.head(config.limit)
    metadata = retrieve_and_store(
        context, storage, sie, Partition(APPROACH, *partition_keys(context)),
        products["product_id"].to_list(), products["product_description"].to_list(), config,
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(partitions_def=model_variant, group_name=GROUP, deps=[text_retrieval_predictions], code_version="1")
def text_retrieval_metrics(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Strict and lenient hierarchical P/R/F1 and macro L1/L2/L3, with query latency, into `metrics`."""
    return score_top1(storage, Partition(APPROACH, *partition_keys(context)))
