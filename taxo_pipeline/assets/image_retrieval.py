"""Image retrieval (model x variant): each product image queried against the same model's text
category index. Products without an image, or with bytes that do not decode, are skipped and counted."""

import dagster as dg
import polars as pl
from pydantic import Field

from taxo_pipeline.assets.category_index import category_embeddings
from taxo_pipeline.assets.dataset import load_experiment, products_experiment_l3
from taxo_pipeline.assets.metadata import markdown_table
from taxo_pipeline.assets.partitions import model_variant, partition_keys
from taxo_pipeline.assets.retrieval_steps import RetrievalConfig, retrieve_and_store, score_top1
from taxo_pipeline.dataset.products import IMAGE
from taxo_pipeline.evaluation.store import Partition, clear_partition
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.retrieval.images import image_queries
from taxo_pipeline.sie.catalogue import load_catalogue
from taxo_pipeline.sie.resource import SIEResource

APPROACH = "image-retrieval"
GROUP = "image_retrieval"


class ImageRetrievalConfig(RetrievalConfig):
    batch_size: int = Field(default=16, description="Images per encode request (the reference used 16).")


def _not_applicable(model: str) -> str | None:
    """Why an image approach does not apply to this model, if it does not."""
    catalogue = load_catalogue()
    if model in {spec.id for spec in catalogue} and catalogue[model].family != "image":
        return f"{model} is a {catalogue[model].family} model in {catalogue.path}: image retrieval needs an image model"
    return None


@dg.asset(
    partitions_def=model_variant, group_name=GROUP, deps=[products_experiment_l3, category_embeddings], code_version="1"
)
def image_retrieval_predictions(
    context: dg.AssetExecutionContext, config: ImageRetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """Top-k categories per product image (JPEG bytes from the shard), nearest category documents."""
    partition = Partition(APPROACH, *partition_keys(context))
    if reason := _not_applicable(partition.model):
        clear_partition(storage.warehouse(), partition)
        context.log.info(f"skipped: {reason}")
        return dg.MaterializeResult(metadata={"skipped": reason, "products": 0})
    products = load_experiment(storage, with_images=True)
    if config.limit is not None:
        products = products.head(config.limit)
    images = (
        products[IMAGE].struct.field("bytes").to_list() if IMAGE in products.columns else [None] * products.height
    )
    queries = image_queries(products["product_id"].to_list(), images)
    for product_id, why in queries.broken.items():
        context.log.warning(f"product {product_id}: image skipped, it does not decode ({why})")
    metadata = retrieve_and_store(context, storage, sie, partition, queries.product_ids, queries.images, config)
    broken = pl.DataFrame({"product_id": list(queries.broken), "problem": list(queries.broken.values())})
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "skipped_without_image": len(queries.without_image),
            "skipped_broken_image": len(queries.broken),
            "broken_images": dg.MetadataValue.md(markdown_table(broken) if broken.height else "none"),
        }
    )


@dg.asset(partitions_def=model_variant, group_name=GROUP, deps=[image_retrieval_predictions], code_version="1")
def image_retrieval_metrics(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Strict and lenient hierarchical and macro metrics of image retrieval, into `metrics`."""
    partition = Partition(APPROACH, *partition_keys(context))
    if reason := _not_applicable(partition.model):
        return dg.MaterializeResult(metadata={"skipped": reason, "count": 0})
    return score_top1(storage, partition)
