"""Zero-shot NLI (one partition per NLI model): `extract` scores each description against the 26
L1 labels; the prediction is the top label, evaluated with L1 macro F1 as the reference does."""

import dagster as dg
from pydantic import Field

from taxo_pipeline.assets.dataset import load_experiment, load_taxonomy_l3, products_experiment_l3, taxonomy_l3
from taxo_pipeline.assets.metadata import hf1_chart_metadata
from taxo_pipeline.assets.model_fingerprints import nli_model_fingerprint
from taxo_pipeline.assets.partitions import nli_models
from taxo_pipeline.evaluation.metrics import evaluate_l1
from taxo_pipeline.evaluation.store import (
    Partition,
    latency,
    save_latencies,
    save_metrics,
    save_predictions,
    top1_with_truth,
)
from taxo_pipeline.evaluation.views import refresh_views
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.catalogue import load_catalogue
from taxo_pipeline.sie.resource import SIEResource

APPROACH = "nli"
VARIANT = "l1"  # NLI predicts the top level only
GROUP = "nli"
STAGE = "extract"


class NLIConfig(dg.Config):
    top_k: int = Field(default=5, description="Labels stored per product, best first.")
    limit: int | None = Field(default=None, description="Evaluate only the first N products.")
    batch_size: int = Field(default=16, description="Products per extract request (the reference used 16).")


@dg.asset(
    partitions_def=nli_models,
    group_name=GROUP,
    deps=[products_experiment_l3, taxonomy_l3, nli_model_fingerprint],
    code_version="1",
)
def nli_predictions(
    context: dg.AssetExecutionContext, config: NLIConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """Each description's L1 labels ranked by entailment score (sorted here: some servers keep label order)."""
    model = context.partition_key
    labels = load_taxonomy_l3(storage).l1_labels()
    products = load_experiment(storage)
    if config.limit is not None:
        products = products.head(config.limit)
    with sie.client(logger=context.log) as client:
        classified = client.extract(model, products["product_description"].to_list(), labels, batch_size=config.batch_size)
        requests = client.latencies
    partition = Partition(APPROACH, model, VARIANT)
    warehouse = storage.warehouse()
    rows = save_predictions(
        warehouse, partition, products["product_id"].to_list(),
        [[(c["label"], c["score"]) for c in ranked[: config.top_k]] for ranked in classified],
    )
    save_latencies(warehouse, partition, STAGE, requests)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": rows, "products": products.height, "labels": len(labels), "sie_requests": len(requests)}
    )


@dg.asset(partitions_def=nli_models, group_name=GROUP, deps=[nli_predictions], code_version="1")
def nli_metrics(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """L1 macro P/R/F1 over the sorted L1 labels, strict and lenient, into `metrics`."""
    partition = Partition(APPROACH, context.partition_key, VARIANT)
    warehouse = storage.warehouse()
    scored = top1_with_truth(warehouse, partition)
    result = evaluate_l1(
        scored["prediction"].to_list(), scored["ground_truth_category"].to_list(),
        scored["potential_product_categories"].to_list(), load_taxonomy_l3(storage).l1_labels(),
    )
    latency_block = latency(warehouse, partition, STAGE)
    save_metrics(warehouse, partition, result, scored.height, latency_block)
    refresh_views(warehouse, load_catalogue())
    return dg.MaterializeResult(
        metadata={
            "count": scored.height,
            "strict_l1_f1": dg.MetadataValue.float(result["strict"]["f1"]),
            "lenient_l1_f1": dg.MetadataValue.float(result["lenient"]["f1"]),
            "latency_p50_ms": dg.MetadataValue.float(latency_block["p50"]),
            "latency_p95_ms": dg.MetadataValue.float(latency_block["p95"]),
            **hf1_chart_metadata(warehouse, partition.model),
        }
    )
