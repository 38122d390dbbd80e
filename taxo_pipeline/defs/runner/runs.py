"""Materializations launched by the commands into the persistent Dagster instance, so they show in the
UI's run history, against the SIE server the caller started for the whole command."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from taxo_pipeline.defs.ingest.assets import source_file
from taxo_pipeline.defs.resources import WorkspaceResource, pipeline_resources
from taxo_pipeline.defs.runner import RUN_EVENTS_LOGGER
from taxo_pipeline.defs.runner.launcher import fail_runs_of_dead_commands, owner_tags
from taxo_pipeline.errors import InputError, RunFailedError

DAGSTER_YAML = """\
# Written by taxo-pipeline on first use; edit freely.
telemetry:
  enabled: false
# While the daemon runs (taxo-pipeline dev), a run whose process died is marked failed instead of
# staying STARTED: within poll_interval_seconds (default 120) for a command's run, whose process the
# launcher below checks; the code server of `dagster dev` does it for the runs it launched.
run_monitoring:
  enabled: true
  max_resume_run_attempts: 0
run_launcher:
  module: taxo_pipeline.defs.runner.launcher
  class: CommandRunLauncher
"""
# What earlier versions wrote: replaced by the current one, as they were never edited. (An edited one
# naming taxo_pipeline.cli.run_owner keeps working: that module re-exports the launcher.)
_EARLIER_DAGSTER_YAMLS = (
    "# Written by taxo-pipeline on first use; edit freely.\ntelemetry:\n  enabled: false\n",
    "# Written by taxo-pipeline on first use; edit freely.\ntelemetry:\n  enabled: false\n"
    "# While the daemon runs (taxo-pipeline dev), a run whose process died is marked failed instead of\n"
    "# staying STARTED.\nrun_monitoring:\n  enabled: true\n  max_resume_run_attempts: 0\n",
    DAGSTER_YAML.replace("taxo_pipeline.defs.runner.launcher", "taxo_pipeline.cli.run_owner"),
)


def dagster_home(home: Path) -> Path:
    """Prepare `home` (DAGSTER_HOME, which the commands and `taxo-pipeline dev` share): create it, and
    write its dagster.yaml unless there is one the user wrote or edited."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() in _EARLIER_DAGSTER_YAMLS:
        config.write_text(DAGSTER_YAML)
    return home


def command_instance(home: Path) -> dg.DagsterInstance:
    """The persistent instance in `home` that the commands and `taxo-pipeline dev` share, opened from
    its folder (the environment is left as it is). Runs left STARTED by a killed command are marked
    failed first: they would keep their assets "in progress", so the automation would never run them again."""
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    fail_runs_of_dead_commands(instance)
    return instance


def source_run_config(products: str | None, taxonomy: str | None) -> dict:
    ops = {}
    if products:
        ops["raw_products"] = {"config": {"source": products}}
    if taxonomy:
        ops["raw_taxonomy"] = {"config": {"source": taxonomy}}
    return ops


def check_sources(storage: WorkspaceResource, sources: Mapping[str, str | None]) -> None:
    """Resolve each source a command reads ({"products" or "taxonomy": the path or URL given, else its env
    var's}), a URL downloaded into data/ once, before any server starts: one error naming every one missing."""
    problems = []
    for what, source in sources.items():
        try:
            source_file(storage, what, source)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("\n".join(["the data sources are not available:", *problems]))


def materialize(
    selection: Sequence[str] | dg.AssetSelection,
    *,
    instance: dg.DagsterInstance,
    sie_url: str | None,
    storage: WorkspaceResource | None = None,
    ops_config: dict | None = None,
    partition_key: str | None = None,
    dynamic_partitions: dict[str, list[str]] | None = None,
    tags: dict[str, str] | None = None,
    console_level: str = "CRITICAL",
) -> dg.ExecuteInProcessResult:
    """Materialize `selection` in `instance` (`command_instance`; for one partition if given; unpartitioned
    assets in the selection run once) against the SIE server at `sie_url`: the caller's `ensure_sie`,
    shared by every run of the command (None for selections that call no model). `dynamic_partitions`
    ({definition name: model ids}) are added first if missing. Dagster's console logger logs at
    `console_level` (the run's events go to RUN_EVENTS_LOGGER at DEBUG once it ended). A failed run
    raises RunFailedError with its innermost error."""
    from taxo_pipeline.definitions import defs  # loading definitions is slow; only commands that run need it

    for name, keys in (dynamic_partitions or {}).items():
        if missing := [k for k in keys if not instance.has_dynamic_partition(name, k)]:
            instance.add_dynamic_partitions(name, missing)
    selection = selection if isinstance(selection, dg.AssetSelection) else dg.AssetSelection.assets(*selection)
    name = run_name(selection.resolve(defs.resolve_asset_graph()))
    # dg.materialize's own job is named __ephemeral_asset_job__ in the UI; this one says what it ran.
    job = dg.Definitions(
        assets=[*defs.assets, *defs.asset_checks],
        jobs=[dg.define_asset_job(name, selection=selection)],
        resources=pipeline_resources(storage, sie_url=sie_url),
    ).resolve_job_def(name)
    result = job.execute_in_process(
        run_config={"ops": ops_config or {}, "loggers": {"console": {"config": {"log_level": console_level}}}},
        instance=instance,
        partition_key=partition_key,
        tags={**owner_tags(), **(tags or {})},
        raise_on_error=False,
    )
    events = logging.getLogger(RUN_EVENTS_LOGGER)
    for record in instance.all_logs(result.run_id):
        events.debug("run %s %s: %s", result.run_id[:8], record.step_key or "-", record.user_message)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        detail = _root_message(failure.step_failure_data.error) if failure else "see the run in the Dagster UI"
        raise RunFailedError(f"run {result.run_id} failed at {failure.step_key if failure else '?'}: {detail}")
    return result


def run_name(keys) -> str:
    """A job name (letters, digits, _) saying what a command's run materializes: its first assets."""
    names = sorted(key.to_python_identifier() for key in keys)
    more = f"__and_{len(names) - 2}_more" if len(names) > 2 else ""
    return "cli__" + "__".join(names[:2]) + more


def _root_message(error) -> str:
    """The innermost cause is the message our code wrote for the user."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()
