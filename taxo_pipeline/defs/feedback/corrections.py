"""Reviewers' corrections (TAXO_CORRECTIONS, taxo_pipeline/dataset/corrections.py) as an observable source.
Its data version is the file's SHA-256 (`none` while unset); label transfer's predictions read it, so a
changed file reruns label transfer's partitions and their metrics (with the calibration), no other
asset (catalogue runs rewrite the shards a new review matches: defs/classify/sensors.py).

`corrections_sensor` records an observation when the file's fingerprint differs from the last recorded
one and every row of it is good (checked against the full taxonomy once that is built), so a bad file
reruns nothing: the tick names its bad rows and the last good version stays. `taxo-pipeline materialize`
does the same before it plans its runs (and stops on a bad row), and "Observe sources" in the UI records
the same version (or fails, naming the bad rows)."""

import dagster as dg

from taxo_pipeline.dataset.corrections import NONE, corrections_fingerprint
from taxo_pipeline.dataset.tables import load_corrections
from taxo_pipeline.defs.models.sensors import DATA_VERSION_TAG, recorded_version
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.errors import InputError
from taxo_pipeline.workspace import Workspace

GROUP = "feedback"


@dg.observable_source_asset(
    group_name=GROUP,
    description="The reviewed labels in TAXO_CORRECTIONS (product_id, category, product_title, product_description): "
    "its SHA-256 is its data version, `none` while unset. Label transfer's labelled pool includes them; catalogue "
    "runs give a reviewed product (its id and text) its reviewer's category.",
)
def corrections_file(storage: WorkspaceResource) -> dg.DataVersion:
    workspace = storage.workspace()
    return dg.DataVersion(_checked(corrections_fingerprint(workspace.settings.corrections), workspace))


def _checked(version: str, workspace: Workspace) -> str:
    """`version`, once every row of the file is good (InputError naming the bad ones); checked against the
    full taxonomy once it is built (label transfer checks it again when it reads it)."""
    if version != NONE and workspace.full_taxonomy_path.is_file():
        load_corrections(workspace)
    return version


def corrections_observations(instance: dg.DagsterInstance, workspace: Workspace) -> list[dg.AssetObservation]:
    """An observation of the workspace's corrections' fingerprint if it is not the one last recorded (else
    none); InputError for a TAXO_CORRECTIONS that names no file or holds a bad row."""
    corrections = workspace.settings.corrections
    value = corrections_fingerprint(corrections)
    if recorded_version(instance, corrections_file.key) == value:
        return []
    return [dg.AssetObservation(asset_key=corrections_file.key, tags={DATA_VERSION_TAG: _checked(value, workspace)},
                                metadata={"fingerprint": value, "path": str(corrections or "")})]  # fmt: skip


def build_corrections_sensor(workspace: Workspace) -> dg.SensorDefinition:
    """The sensor, every TAXO_SENSOR_INTERVAL_S, for the workspace's TAXO_CORRECTIONS (taxo_pipeline/definitions.py
    builds it from the code location's one Workspace)."""

    @dg.sensor(
        minimum_interval_seconds=workspace.settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records the fingerprint of the corrections file (TAXO_CORRECTIONS) when it changes; the "
        "automation sensor then reruns label transfer's partitions.",
    )
    def corrections_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        try:
            observations = corrections_observations(context.instance, workspace)
        except InputError as exc:  # a missing file or a bad row: the tick says so, and the last version stays
            return dg.SkipReason(str(exc))
        if not observations:
            return dg.SkipReason("the corrections file is unchanged")
        return dg.SensorResult(asset_events=observations)

    return corrections_sensor
