"""`catalogue_classifications`: one partition = one shard of the catalogue = one run. A thin wrapper of
run_shard (the same per-shard function `classify-products` runs): a shard whose file already holds its
rows under the same settings is kept, any other is classified and its Parquet file written atomically.
The catalogue is validated whole first, and the run that completes it publishes it to the view."""

import dagster as dg
from pydantic import Field

from taxo_pipeline.classification.catalogue_labels import refresh_learning_view
from taxo_pipeline.classification.classifier import catalogue_classifier, learned_run
from taxo_pipeline.classification.review import known_products
from taxo_pipeline.classification.run import (
    CatalogueRun,
    Choices,
    catalogue_setting,
    find_shard,
    prepare_run,
    publish_run,
    run_shard,
)
from taxo_pipeline.classification.shards import MERCHANT, REVIEWER, classifications_root, refresh_view
from taxo_pipeline.defs.classify.partitions import catalogue_shards
from taxo_pipeline.defs.ingest.assets import products_experiment, taxonomy_full_depth, taxonomy_trimmed
from taxo_pipeline.defs.resources import SIEResource, WorkspaceResource
from taxo_pipeline.warehouse.classifications import REVIEW_QUEUE, refresh_review_queue
from taxo_pipeline.workspace import Workspace

GROUP = "classify"


class ClassifyConfig(dg.Config):
    products: str | None = Field(default=None, description="The catalogue file (unset: TAXO_CATALOGUE).")
    approach: str | None = Field(default=None, description="Approach (unset: the leaderboard's best).")
    model: str | None = Field(default=None, description="Model id (unset: the best evaluated for the approach).")
    variant: str | None = Field(default=None, description="Category documents (unset: the best evaluated).")
    top_k: int = Field(default=5, gt=0, description="Candidates per product.")
    shard_size: int | None = Field(default=None, gt=0, description="Products per shard (unset: TAXO_SHARD_SIZE, else 10000).")
    chunk_size: int | None = Field(default=None, gt=0, description="Products classified at once (unset: TAXO_CLASSIFY_CHUNK, else 2048).")  # fmt: skip
    target_precision: float | None = Field(
        default=None, gt=0, le=1,
        description="Mark needs_review on the products below the confidence threshold whose held-out labelled "
        "products reach this precision, observed and in mean confidence (unset: no review flag).",
    )  # fmt: skip
    trust_evaluation: bool = Field(
        default=False,
        description="With too few labelled products in the catalogue to confirm the calibration, accept products by "
        "the evaluation's threshold instead of sending every one to review.",
    )

    def choices(self, workspace: Workspace) -> Choices:
        return Choices(
            self.approach, self.model, self.variant, self.top_k,
            self.shard_size or workspace.settings.shard_size,
            self.chunk_size or workspace.settings.classify_chunk, target_precision=self.target_precision,
            trust_evaluation=self.trust_evaluation,
        )  # fmt: skip


def run_config(run: CatalogueRun) -> dict:
    """The asset's run config for `run`'s shards, every choice explicit so each run shows what it ran."""
    config = {"products": str(run.products), "approach": run.key.approach, "model": run.key.model,
              "variant": run.key.variant, "top_k": run.top_k, "shard_size": run.shard_size, "chunk_size": run.chunk_size}  # fmt: skip
    config["target_precision"] = run.target_precision
    config["trust_evaluation"] = run.trust_evaluation
    return {"ops": {"catalogue_classifications": {"config": config}}}


@dg.asset(
    partitions_def=catalogue_shards, group_name=GROUP, kinds={"sie", "parquet"},
    deps=[products_experiment, taxonomy_trimmed, taxonomy_full_depth],
    description="A shard of the catalogue (TAXO_CATALOGUE or the run config's `products`) classified by the "
    "leaderboard's best approach (or the one configured), with a calibrated confidence per product, written "
    "to one Parquet file under data/classifications/ that the warehouse view `classifications` reads.",
)  # fmt: skip
def catalogue_classifications(
    context: dg.AssetExecutionContext, config: ClassifyConfig, storage: WorkspaceResource, sie: SIEResource
) -> dg.MaterializeResult:
    workspace = storage.workspace()
    run = prepare_run(workspace, catalogue_setting(workspace, config.products), config.choices(workspace))
    shard, check = find_shard(run, int(context.partition_key))
    with sie.client(logger=context.log, store_vectors=False) as client:
        run = learned_run(run, workspace, client)  # the first shard run learns the catalogue's labels, the rest read it
        outcome = run_shard(shard, run, catalogue_classifier(run, workspace, client))
    # the run that completes the catalogue publishes its shards (one brief warehouse write: the view)
    if publish_run(run, check.fingerprints):
        refresh_view(workspace.warehouse, workspace.data_dir)
        refresh_learning_view(workspace.warehouse, classifications_root(workspace.data_dir))
    if not workspace.warehouse.table_exists(REVIEW_QUEUE):
        refresh_review_queue(workspace.warehouse)
    context.log.info(f"shard {context.partition_key}: {'classified' if outcome.classified else 'kept'} -> {outcome.path}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": outcome.products,
            "classified": outcome.classified,
            "skipped_products": outcome.skipped,
            "reviewed_products": known_products([outcome.path], REVIEWER),
            "merchant_labelled_products": known_products([outcome.path], MERCHANT),
            **({"mean_confidence": outcome.mean_confidence} if outcome.mean_confidence is not None else {}),
            **({"review_threshold": run.threshold} if run.threshold is not None else {}),
            **({"catalogue_learning": run.learned.figures()} if run.learned is not None else {}),
            "approach": run.key.approach,
            "model": run.key.model,
            "variant": run.key.variant,
            "catalogue": str(run.products),
            "path": dg.MetadataValue.path(str(outcome.path)),
        }
    )
