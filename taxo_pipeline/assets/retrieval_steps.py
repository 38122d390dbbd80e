"""Steps every category-retrieval approach shares: query the index with encoded products, store the
top-k, and score the top-1 against the ground truth. Text and image retrieval differ only in what
they encode."""

from collections.abc import Sequence

import dagster as dg
import numpy as np
from pydantic import Field

from taxo_pipeline.assets.metadata import hf1_chart_metadata, metrics_metadata
from taxo_pipeline.evaluation.metrics import evaluate_paths
from taxo_pipeline.evaluation.store import (
    METRICS,
    Partition,
    clear_partition,
    latency,
    save_latencies,
    save_metrics,
    save_predictions,
    top1_with_truth,
)
from taxo_pipeline.evaluation.views import refresh_views
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.catalogue import load_catalogue, model_slug
from taxo_pipeline.sie.resource import SIEResource

QUERY_STAGE = "query_encode"


class RetrievalConfig(dg.Config):
    top_k: int = Field(default=5, description="Candidates stored per product.")
    limit: int | None = Field(default=None, description="Evaluate only the first N products.")
    batch_size: int = Field(default=8, description="Products per encode request (the reference: text 8, image 16).")


def retrieve_and_store(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sie: SIEResource,
    partition: Partition,
    product_ids: Sequence[str],
    queries: Sequence[str | bytes],
    config: RetrievalConfig,
) -> dict[str, dg.MetadataValue]:
    """Encode `queries` (texts or image bytes) with is_query=True, keep each one's top-k categories
    from the model x variant index, and replace the partition's predictions and query latencies."""
    with sie.client(logger=context.log) as client:
        encoded = client.encode_detailed(partition.model, queries, is_query=True, batch_size=config.batch_size)
        requests_made = client.request_count
    index = CategoryIndex(storage.index_path(), model_slug(partition.model), partition.variant)
    if not index.count():
        raise RuntimeError(
            f"no category index for {partition.model} {partition.variant} in {index.directory}: "
            "materialize category_embeddings for this partition first"
        )
    matches = index.query(encoded.vectors, config.top_k) if len(queries) else []
    warehouse = storage.warehouse()
    rows = save_predictions(
        warehouse, partition, list(product_ids), [[(m.path, 1.0 - m.distance) for m in ms] for ms in matches]
    )
    save_latencies(warehouse, partition, QUERY_STAGE, encoded.requests)
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "products": dg.MetadataValue.int(len(product_ids)),
        "top_k": dg.MetadataValue.int(config.top_k),
        "from_embedding_cache": dg.MetadataValue.int(int(np.count_nonzero(encoded.from_cache))),
        "sie_requests": dg.MetadataValue.int(requests_made),
    }


def score_top1(storage: StorageResource, partition: Partition, stage: str = QUERY_STAGE) -> dg.MaterializeResult:
    """Strict and lenient hierarchical P/R/F1 and macro L1/L2/L3 of the stored top-1, with the
    stage's latency, into the shared `metrics` table."""
    warehouse = storage.warehouse()
    scored = top1_with_truth(warehouse, partition)
    if scored.height == 0:  # nothing to score (e.g. no product has an image): no figures rather than zeros
        clear_partition(warehouse, partition, tables=(METRICS,))
        return dg.MaterializeResult(metadata={"count": 0, "skipped": "no predictions to score"})
    result = evaluate_paths(
        scored["prediction"].to_list(), scored["ground_truth_category"].to_list(),
        scored["potential_product_categories"].to_list(),
    )
    latency_block = latency(warehouse, partition, stage)
    save_metrics(warehouse, partition, result, scored.height, latency_block)
    refresh_views(warehouse, load_catalogue())
    return dg.MaterializeResult(
        metadata={**metrics_metadata(result, scored.height, latency_block), **hf1_chart_metadata(warehouse, partition.model)}
    )
