"""A command's run whose process is SIGKILLed mid-run (issue 12) is marked FAILURE, by run monitoring in a
real `dagster-daemon` or by the next command, instead of staying STARTED (which kept its assets "in
progress", so the automation never ran them again)."""

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from taxo_pipeline.cli.common import command_instance
from taxo_pipeline.defs.runner.runs import _EARLIER_DAGSTER_YAMLS, DAGSTER_YAML, dagster_home

# Materializes raw_products from a URL through the commands' own run function (in-process, as
# `taxo-pipeline eval`, `predict` and `materialize` do).
COMMAND = """
import sys
from taxo_pipeline.cli.common import materialize
from taxo_pipeline.defs.runner.runs import source_run_config
materialize(["raw_products"], sie_url=None, ops_config=source_run_config(sys.argv[1], None))
"""
MONITORING_BOUND_S = 120  # the daemon's start plus a few 1-second monitoring rounds, with room on a busy machine


@contextlib.contextmanager
def server_that_never_answers() -> Iterator[tuple[str, threading.Event]]:
    """A URL whose server accepts the request and holds it unanswered; the event is set once it came."""
    requested, release = threading.Event(), threading.Event()

    class Hold(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.set()
            release.wait(300)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hold)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/products.jsonl", requested
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def daemon(home: Path, log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` on the instance in `home`, no code location (only run monitoring matters)."""
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(daemon_bin), "run", "--empty-workspace"],
            env={**os.environ, "DAGSTER_HOME": str(home)}, cwd=home, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _monitored_home(tmp_path: Path, monkeypatch) -> Path:
    """The instance folder the commands write, with run monitoring polling every second."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    home = dagster_home(tmp_path / "dagster_home")
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _started_run(home: Path, command: subprocess.Popen) -> dg.DagsterRun:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.STARTED], f"command exit code {command.poll()}"
    return runs[0]


def _wait_for_status(home: Path, run_id: str, bound_s: float) -> dg.DagsterRunStatus:
    deadline = time.monotonic() + bound_s
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            status = instance.get_run_by_id(run_id).status
            if status != dg.DagsterRunStatus.STARTED or time.monotonic() > deadline:
                return status
            time.sleep(1)


def _killed_command_run(home: Path) -> tuple[dg.DagsterRun, int]:
    """A command's run left STARTED by SIGKILLing its process while the run waits for a download; and its pid."""
    with server_that_never_answers() as (url, requested):
        command = subprocess.Popen([sys.executable, "-c", COMMAND, url], env={**os.environ})
        try:
            if not requested.wait(300):
                pytest.fail(f"the run never reached the download (command exit code {command.poll()})")
            run = _started_run(home, command)
        finally:
            command.send_signal(signal.SIGKILL)
            command.wait()
    assert _wait_for_status(home, run.run_id, 0) == dg.DagsterRunStatus.STARTED  # nothing else marks it
    return run, command.pid


def _failure_messages(home: Path, run_id: str) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]


def test_a_killed_command_run_is_marked_failed_by_run_monitoring(workspace, tmp_path, monkeypatch):
    home = _monitored_home(tmp_path, monkeypatch)
    run, pid = _killed_command_run(home)

    log = tmp_path / "daemon.log"
    with daemon(home, log):
        status = _wait_for_status(home, run.run_id, MONITORING_BOUND_S)
    tail = "\n".join(log.read_text().splitlines()[-40:])
    assert status == dg.DagsterRunStatus.FAILURE, f"still {status} after {MONITORING_BOUND_S} s; daemon log:\n{tail}"
    assert _failure_messages(home, run.run_id) == [
        f"Detected run worker status FAILED: 'the process that ran it (pid {pid} on {run.tags['taxo/host']}) "
        f"is gone: it was killed or crashed'. Marking run {run.run_id} as failed."
    ]


def _wait_for_second_run(home: Path, first_run_id: str, command: subprocess.Popen) -> dg.DagsterRun:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for _ in range(300):
            started = [
                r for r in instance.get_runs() if r.run_id != first_run_id and r.status == dg.DagsterRunStatus.STARTED
            ]
            if started or command.poll() is not None:
                break
            time.sleep(1)
    assert len(started) == 1, f"command exit code {command.poll()}"
    return started[0]


def test_without_the_daemon_the_next_command_marks_a_killed_run_failed(workspace, tmp_path, monkeypatch):
    home = _monitored_home(tmp_path, monkeypatch)
    run, pid = _killed_command_run(home)
    with server_that_never_answers() as (url, _):  # a live command's run is left alone
        live = subprocess.Popen([sys.executable, "-c", COMMAND, url], env={**os.environ})
        try:
            live_run = _wait_for_second_run(home, run.run_id, live)
            command_instance().dispose()  # what every command opens first
            assert _wait_for_status(home, live_run.run_id, 0) == dg.DagsterRunStatus.STARTED
        finally:
            live.send_signal(signal.SIGKILL)
            live.wait()

    assert _wait_for_status(home, run.run_id, 0) == dg.DagsterRunStatus.FAILURE
    assert _failure_messages(home, run.run_id) == [
        f"Marked failed by a later command: the process that ran it (pid {pid} on {run.tags['taxo/host']}) "
        "is gone: it was killed or crashed."
    ]


@pytest.mark.parametrize("earlier", _EARLIER_DAGSTER_YAMLS)
def test_an_instance_file_written_by_an_earlier_version_gets_the_run_launcher(tmp_path, monkeypatch, earlier):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text(earlier)
    dagster_home(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == DAGSTER_YAML
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher).__name__ == "CommandRunLauncher"
        assert instance.run_monitoring_enabled

    edited = earlier + "# mine\n"  # a file the user edited is theirs
    (tmp_path / "dagster.yaml").write_text(edited)
    dagster_home(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == edited
    # the launcher's earlier module path (taxo_pipeline.cli.run_owner) still loads it
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = "CommandRunLauncher" if "run_launcher" in earlier else "DefaultRunLauncher"
        assert type(instance.run_launcher).__name__ == launcher
