"""The Dagster code location: everything under taxo_pipeline/defs/, loaded as dagster-university's
projects load theirs."""

from pathlib import Path

import dagster as dg

from taxo_pipeline import settings

_EXECUTORS = {"multiprocess": dg.multi_or_in_process_executor, "in_process": dg.in_process_executor}


def run_executor() -> dg.ExecutorDefinition:
    """How a launched run executes its steps (TAXO_EXECUTOR): `multiprocess` (Dagster's default, one process
    per step) or `in_process` (one process per run: far less memory and start-up CPU on a small machine)."""
    return _EXECUTORS[settings.current().executor]


defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent), dg.Definitions(executor=run_executor())
)
