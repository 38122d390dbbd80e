"""`taxo-pipeline dev`: `dagster dev` on the commands' instance, with one local SIE server for every run.

`dagster dev` runs in a session (and process group) of its own with everything it starts (webserver,
daemon, code servers, run workers: Dagster starts none of them in a group of its own). A terminal's
Ctrl-C reaches only this process then, so stopping is this command's job, the same for SIGINT, SIGTERM
and SIGHUP: the group gets SIGINT, what a terminal sends on Ctrl-C (`dagster dev` takes SIGTERM for
SIGINT too, and tells its webserver and daemon to stop through their shutdown pipes, waiting up to 60 s
for each); what is left of the group after DAGSTER_STOP_S (or at a second signal) is killed. Then the
SIE server stops through its context. Should this process die without unwinding (SIGKILL), `dagster
dev` gets SIGTERM from the kernel, and the SIE server too (local_process).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.defs.runner.runs import dagster_home
from taxo_pipeline.processes import child_environment, group_alive
from taxo_pipeline.sie.dev_server import dev_sie
from taxo_pipeline.sie.local_process import die_with_parent
from taxo_pipeline.workspace import Workspace

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long the group may take to stop after SIGINT before what remains is killed: dagster dev waits for
# its webserver and daemon (each within 60 s), which wait for their code servers and runs.
DAGSTER_STOP_S = 60.0
POLL_S = 0.2


def add_dev(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="the Dagster UI on the commands' instance, with one local SIE server for every run",
        description="Run `dagster dev` with DAGSTER_HOME shared with the commands and SIE_BASE_URL set (unless "
        "SIE_BASE_URL is already set, a local server that follows the model catalogue: models enabled while it "
        "runs are loaded, changed ones reloaded). Other arguments go to dagster dev: `dev -p 3001` or `dev -- -p 3001`. "
        "Ctrl-C, SIGTERM or SIGHUP stops dagster dev and every process it started, then the SIE server.",
    )
    # main() hands the arguments this parser does not know to dagster dev.
    parser.set_defaults(run=run_dev, dagster_args=[])


def dagster_dev_command(dagster_args: Sequence[str]) -> list[str]:
    """`dagster dev` on the project's workspace, with the user's arguments (a leading `--` dropped)."""
    extra = list(dagster_args[1:] if dagster_args[:1] == ["--"] else dagster_args)
    return [sys.executable, "-m", "dagster", "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml"), *extra]


def run_dev(args: argparse.Namespace) -> int:
    workspace = Workspace.from_env()
    home = dagster_home(workspace.settings.dagster_home)
    with dev_sie(workspace.sie, workspace.data_dir, workspace.settings.models,
                 logger=logging.getLogger("taxo_pipeline")) as url:  # fmt: skip
        env = child_environment(SIE_BASE_URL=url, DAGSTER_HOME=str(home))
        return run_group(dagster_dev_command(args.dagster_args), env=env, cwd=settings.PROJECT_ROOT)


def run_group(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, stop_s: float = DAGSTER_STOP_S) -> int:
    """Run `command` in a process group of its own until it exits, stopping the group on SIGINT, SIGTERM
    or SIGHUP (module docstring); no process of the group outlives this call. Its exit code, or 128 +
    the signal's number once stopped by one."""
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in STOP_SIGNALS}
    try:
        # A signal received from here on is acted on in _supervise, once the group exists.
        # A session of its own, off the terminal: no job-control stop when it reads or (with `stty tostop`) writes.
        proc = subprocess.Popen(
            command, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        code = _supervise(proc, received, stop_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + received[0] if received else code


def _supervise(proc: subprocess.Popen, received: list[int], stop_s: float) -> int:
    """Wait until no process of the group runs. At the first signal, or once the leader exits with others of
    its group left, the group gets SIGINT; at one more signal, or `stop_s` later, SIGKILL."""
    asked_at, signals = None, 0
    try:
        while True:
            code = proc.poll()
            if code is not None and not group_alive(proc.pid):
                return code
            if asked_at is None and (received or code is not None):
                if received:
                    log.info(f"{signal.Signals(received[0]).name}: stopping dagster dev and its processes")
                else:
                    log.info(f"dagster dev exited with code {code}: stopping the processes it left running")
                _signal_group(proc.pid, signal.SIGINT)
                asked_at, signals = time.monotonic(), len(received)
            elif asked_at is not None and (len(received) > signals or time.monotonic() - asked_at > stop_s):
                why = "another signal" if len(received) > signals else f"still running {stop_s:.0f}s after SIGINT"
                log.warning(f"dagster dev: {why}; killing its processes")
                _signal_group(proc.pid, signal.SIGKILL)
                return proc.wait()
            time.sleep(POLL_S)
    except BaseException:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
