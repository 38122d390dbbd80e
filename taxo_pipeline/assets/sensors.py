"""Keep the model partitions in step with the catalogue: enabling a model adds its partitions and
requests the runs that evaluate it."""

import dagster as dg

from taxo_pipeline.assets.jobs import jobs
from taxo_pipeline.assets.partitions import missing_model_partitions
from taxo_pipeline.assets.plan import evaluation_plan
from taxo_pipeline.sie.catalogue import load_catalogue


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=jobs,
    description="Adds partitions for every enabled model of models.yaml and runs the evaluations they add.",
)
def model_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    catalogue = load_catalogue()
    missing = missing_model_partitions(context.instance, catalogue)
    if not missing:
        return dg.SkipReason("every enabled model has its partitions")
    new_models = {model for models in missing.values() for model in models}
    return dg.SensorResult(
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys) for name, keys in missing.items()
        ],
        run_requests=[
            dg.RunRequest(
                job_name=run.job, partition_key=run.partition_key, asset_selection=[dg.AssetKey(a) for a in run.selection]
            )
            for run in evaluation_plan(catalogue, only=new_models)
        ],
    )
