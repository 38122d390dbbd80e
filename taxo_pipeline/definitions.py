"""The Dagster code location: everything under taxo_pipeline/defs/, loaded as dagster-university's
projects load theirs."""

import os
from pathlib import Path

import dagster as dg

from taxo_pipeline.errors import InputError

EXECUTOR_ENV = "TAXO_EXECUTOR"
_EXECUTORS = {"multiprocess": dg.multi_or_in_process_executor, "in_process": dg.in_process_executor}


def run_executor() -> dg.ExecutorDefinition:
    """How a launched run executes its steps (TAXO_EXECUTOR): `multiprocess` (Dagster's default, one process
    per step) or `in_process` (one process per run: far less memory and start-up CPU on a small machine)."""
    name = os.environ.get(EXECUTOR_ENV) or "multiprocess"
    if name not in _EXECUTORS:
        raise InputError(f"{EXECUTOR_ENV} must be one of {', '.join(_EXECUTORS)}, got {name!r}")
    return _EXECUTORS[name]


defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent), dg.Definitions(executor=run_executor())
)
