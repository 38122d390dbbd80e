"""The process that runs a command's in-process run, named in the run's tags, so that a run whose
process was killed (SIGKILL, out of memory, a closed laptop) is marked failed instead of staying
STARTED, which would also keep its partitions "in progress" for the automation.

Run monitoring (the daemon of `taxo-pipeline dev`) asks the instance's run launcher about every
STARTED run; Dagster's default launcher cannot answer for runs it did not launch, so the instance
is configured with `CommandRunLauncher`, which can (runs.DAGSTER_YAML names this module). Without
the daemon, the next command does it (`fail_runs_of_dead_commands`).
"""

from __future__ import annotations

import logging
import os
import socket

import dagster as dg

# Private: a run launcher's health check must return these, and Dagster 1.13 exports neither at the top
# level (nor anywhere public); `dg.DefaultRunLauncher`, the class extended, is public.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from taxo_pipeline.processes import process_start

log = logging.getLogger(__name__)

PID_TAG = "taxo/pid"
START_TAG = "taxo/pid_start"
HOST_TAG = "taxo/host"


def owner_tags() -> dict[str, str]:
    """Tags naming this process (pid, start time, host) as the one running a run."""
    pid = os.getpid()
    return {PID_TAG: str(pid), START_TAG: process_start(pid) or "", HOST_TAG: socket.gethostname()}


def owner_gone(run: dg.DagsterRun) -> str | None:
    """Why the command process that ran `run` is known to be gone; None while it runs, or when the run
    is not a command's or was started on another host (there is no telling)."""
    pid = run.tags.get(PID_TAG)
    if pid is None or run.tags.get(HOST_TAG) != socket.gethostname():
        return None
    start = process_start(int(pid))
    if start is not None and start == run.tags.get(START_TAG):
        return None
    return f"the process that ran it (pid {pid} on {run.tags[HOST_TAG]}) is gone: it was killed or crashed"


def fail_runs_of_dead_commands(instance: dg.DagsterInstance) -> None:
    """Mark FAILURE the STARTED runs of this host's commands whose process is gone."""
    started = instance.get_runs(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: socket.gethostname()})
    )
    for run in started:
        if reason := owner_gone(run):
            log.warning(f"run {run.run_id} was left STARTED and is marked failed: {reason}")
            instance.report_run_failed(run, f"Marked failed by a later command: {reason}.")


class CommandRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default launcher, plus a health check of command runs for run monitoring. Runs it
    launched itself are watched by their code server, which marks them failed if their process dies."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if reason := owner_gone(run):
            return CheckRunHealthResult(WorkerStatus.FAILED, reason)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
