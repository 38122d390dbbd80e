"""Watch the catalogue in TAXO_CATALOGUE: when its content, the shard size, the run's settings (the
leaderboard's best approach, its calibration) or the reviewers' corrections change, make the `catalogue_shard` partitions the
catalogue's shards and request one run per shard that is not already written with the same rows and
settings. A changed shard reruns alone; unchanged shards start no run."""

import json

import dagster as dg

from taxo_pipeline.classification.run import (
    CATALOGUE_VAR,
    Choices,
    catalogue_setting,
    plan_shards,
    prepare_run,
)
from taxo_pipeline.classification.shards import shard_key
from taxo_pipeline.dataset.corrections import corrections_fingerprint
from taxo_pipeline.defs.classify.assets import catalogue_classifications, run_config
from taxo_pipeline.defs.classify.partitions import catalogue_shards, shard_partition_changes
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.errors import InputError
from taxo_pipeline.workspace import Workspace


def catalogue_shard_requests(instance: dg.DagsterInstance, workspace: Workspace, cursor: str | None) -> dg.SensorResult:
    """The partition changes and run requests for the catalogue as it is now; none if it matches `cursor`."""
    shard_size = workspace.settings.shard_size
    choices = Choices(shard_size=shard_size, chunk_size=workspace.settings.classify_chunk)
    run = prepare_run(workspace, catalogue_setting(workspace), choices)
    # the corrections too: a new review rewrites the shards it matches, whatever the approach
    reviews = corrections_fingerprint(workspace.settings.corrections)
    state = json.dumps([str(run.products.resolve()), run.catalogue_fingerprint, shard_size, run.fingerprint, reviews])
    if state == cursor:
        return dg.SensorResult(skip_reason=f"{run.products}: unchanged since the last tick")
    progress, pending = plan_shards(run)
    add, remove = shard_partition_changes(instance, progress.shards)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{state}:{index}", partition_key=shard_key(index), run_config=run_config(run))
            for index in pending
        ],
        dynamic_partitions_requests=[
            *([catalogue_shards.build_add_request(add)] if add else []),
            *([catalogue_shards.build_delete_request(remove)] if remove else []),
        ],
        cursor=state,
    )


def build_catalogue_shards_sensor(workspace: Workspace) -> dg.SensorDefinition:
    """The sensor, every TAXO_SENSOR_INTERVAL_S of `workspace` (taxo_pipeline/definitions.py builds it from the
    code location's one Workspace); each tick reads the catalogue and its settings in the `storage`
    resource's workspace, as the shard runs it requests do."""

    @dg.sensor(
        target=[catalogue_classifications], minimum_interval_seconds=workspace.settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Classifies the catalogue in {CATALOGUE_VAR}: registers its shards as `catalogue_shard` partitions "
        "and launches a run for each shard that is new or changed.",
    )  # fmt: skip
    def catalogue_shards_sensor(context: dg.SensorEvaluationContext, storage: WorkspaceResource) -> dg.SensorResult:
        tick = storage.workspace()
        if not tick.settings.catalogue:
            return dg.SensorResult(skip_reason=f"{CATALOGUE_VAR} is not set: no catalogue to classify")
        try:
            return catalogue_shard_requests(context.instance, tick, context.cursor)
        except InputError as exc:  # e.g. no evaluation yet: the tick says what to do
            return dg.SensorResult(skip_reason=str(exc))

    return catalogue_shards_sensor
