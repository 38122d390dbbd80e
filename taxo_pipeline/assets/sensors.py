"""Keep the model partitions in step with the catalogue: enabling an encoder adds its partitions
and requests their runs."""

import dagster as dg

from taxo_pipeline.assets.category_index import category_embeddings
from taxo_pipeline.assets.partitions import encoder_models, missing_model_partitions, variants
from taxo_pipeline.assets.text_retrieval import text_retrieval_metrics, text_retrieval_predictions
from taxo_pipeline.sie.catalogue import load_catalogue

PARTITIONED_ASSETS = [category_embeddings.key, text_retrieval_predictions.key, text_retrieval_metrics.key]


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=PARTITIONED_ASSETS,
    description="Adds a partition for every enabled text/image model of models.yaml and runs it.",
)
def model_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    new = missing_model_partitions(context.instance, load_catalogue())
    if not new:
        return dg.SkipReason("every enabled encoder model has its partitions")
    return dg.SensorResult(
        dynamic_partitions_requests=[encoder_models.build_add_request(new)],
        run_requests=[
            dg.RunRequest(
                partition_key=dg.MultiPartitionKey({"model": model, "variant": variant}),
                asset_selection=PARTITIONED_ASSETS,
            )
            for model in new
            for variant in variants.get_partition_keys()
        ],
    )
