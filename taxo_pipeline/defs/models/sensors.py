"""Keep the model partitions in step with the catalogue, and record each model's fingerprint.

Enabling a model adds its partitions; disabling or removing one deletes them, so no future run
includes it (its warehouse rows and run history stay). A changed fingerprint is recorded as an
observation of the model's fingerprint source. The eager automation (automation.py) does the rest:
it runs a new model's partitions, and a changed model's, and nothing else. The sensor does this
every minute; `taxo-pipeline materialize` does it before it plans its runs.
"""

from dataclasses import dataclass

import dagster as dg

from taxo_pipeline.defs.models.fingerprints import FINGERPRINT_SOURCES, fingerprints_of
from taxo_pipeline.defs.models.partitions import (
    PartitionChanges,
    enabled_by_partitions,
    model_partition_changes,
    trained_encoders,
)
from taxo_pipeline.sie.model_catalogue import Catalogue, load_catalogue
from taxo_pipeline.workspace import Workspace

# Observations carry their data version in this tag, as the ones an observe run records.
DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class ModelSync:
    changes: PartitionChanges
    observations: list[dg.AssetObservation]  # fingerprints that differ from the last ones recorded
    fingerprints: dict[str, str]  # every enabled model's current fingerprint

    def __bool__(self) -> bool:
        return bool(self.changes.add or self.changes.remove or self.observations)

    def partition_requests(self) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
        return [
            dg.AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys)
            for name, keys in self.changes.add.items()
        ] + [
            dg.DeleteDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys)
            for name, keys in self.changes.remove.items()
        ]


def recorded_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> str | None:
    """The data version of the source's (partition's) latest observation, None if never observed."""
    partitions = [partition] if partition is not None else None
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1).records
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG) if records else None


def model_sync(instance: dg.DagsterInstance, catalogue: Catalogue, workspace: Workspace) -> ModelSync:
    """The partition changes and fingerprint observations that bring the instance in line with the catalogue."""
    observations, fingerprints = [], {}
    for name, models in enabled_by_partitions(catalogue).items():
        key = FINGERPRINT_SOURCES[name].key
        for model, value in fingerprints_of(name)(workspace, catalogue, models).items():
            if name != trained_encoders.name:
                fingerprints[model] = value
            if recorded_version(instance, key, model) != value:
                observations.append(
                    dg.AssetObservation(
                        asset_key=key, partition=model, tags={DATA_VERSION_TAG: value}, metadata={"fingerprint": value}
                    )
                )
    return ModelSync(model_partition_changes(instance, catalogue), observations, fingerprints)


def apply_model_sync(instance: dg.DagsterInstance, sync: ModelSync) -> None:
    """What the sensor daemon does with the sensor's result, for callers outside a sensor."""
    for name, keys in sync.changes.add.items():
        instance.add_dynamic_partitions(name, keys)
    for name, keys in sync.changes.remove.items():
        for key in keys:
            instance.delete_dynamic_partition(name, key)
    for observation in sync.observations:
        instance.report_runless_asset_event(observation)


def build_model_partitions_sensor(workspace: Workspace) -> dg.SensorDefinition:
    """The sensor, every TAXO_SENSOR_INTERVAL_S, for the workspace's catalogue (taxo_pipeline/definitions.py
    builds it from the code location's one Workspace)."""

    @dg.sensor(
        minimum_interval_seconds=workspace.settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Syncs the model partitions with models.yaml and records model fingerprints; the automation "
        "sensor then runs a new or changed model's partitions.",
    )
    def model_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        sync = model_sync(context.instance, load_catalogue(workspace.settings.models), workspace)
        if not sync:
            return dg.SkipReason("every enabled model has its partitions and an unchanged fingerprint")
        return dg.SensorResult(dynamic_partitions_requests=sync.partition_requests(), asset_events=sync.observations)

    return model_partitions_sensor
