"""The Dagster code location: everything under taxo_pipeline/defs/, loaded as dagster-university's
projects load theirs, and what depends on the settings, built here from one Workspace read once: the
evaluation assets and jobs of the registered approaches (TAXO_APPROACHES), the sensors (their intervals)
and the executor. That Workspace is `defs/location.py`'s, which also gives the depth-dependent assets' code
versions their depth (`depth_code_version`): importing a module under defs/ reads no other setting."""

from pathlib import Path

import dagster as dg

from taxo_pipeline.defs.automation import build_automation_sensor
from taxo_pipeline.defs.classify.sensors import build_catalogue_shards_sensor
from taxo_pipeline.defs.evaluate.assets import registered_evaluation_assets
from taxo_pipeline.defs.evaluate.jobs import evaluation_jobs
from taxo_pipeline.defs.feedback.corrections import build_corrections_sensor
from taxo_pipeline.defs.location import location_workspace
from taxo_pipeline.defs.models.sensors import build_model_partitions_sensor
from taxo_pipeline.workspace import Workspace

_EXECUTORS = {"multiprocess": dg.multi_or_in_process_executor, "in_process": dg.in_process_executor}


def run_executor(workspace: Workspace) -> dg.ExecutorDefinition:
    """How a launched run executes its steps (TAXO_EXECUTOR): `multiprocess` (Dagster's default, one process
    per step) or `in_process` (one process per run: far less memory and start-up CPU on a small machine)."""
    return _EXECUTORS[workspace.settings.executor]


def build_sensors(workspace: Workspace) -> list[dg.SensorDefinition]:
    return [
        build_automation_sensor(workspace), build_model_partitions_sensor(workspace),
        build_catalogue_shards_sensor(workspace), build_corrections_sensor(workspace),
    ]  # fmt: skip


def build_defs(workspace: Workspace) -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(
            assets=registered_evaluation_assets(workspace), jobs=evaluation_jobs(workspace), sensors=build_sensors(workspace),
            executor=run_executor(workspace),
        ),
    )


defs = build_defs(location_workspace())
