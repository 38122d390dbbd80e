"""`taxo-pipeline dev` hands its other arguments to `dagster dev`, with or without a `--` before them, and a
signal to it stops every process it started."""

import contextlib
import os
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml
from dagster._cli.dev import dev_command

from taxo_pipeline import settings
from taxo_pipeline.cli.dev import dagster_dev_command
from taxo_pipeline.cli.main import parse_args
from taxo_pipeline.processes import group_alive
from taxo_pipeline.sie.local_process import free_port
from taxo_pipeline_tests.sie.sie_testkit import TINY_CROSS_ENCODER, write_catalogue
from taxo_pipeline_tests.test_dev_daemon import START_BOUND_S, _dev_home, _dev_sie_url, _start_dev, _stop, _tail

STOP_BOUND_S = 120  # DAGSTER_STOP_S, then the SIE server's own stop


@pytest.mark.parametrize("argv", [["dev", "-p", "3001"], ["dev", "--", "-p", "3001"]])
def test_dev_passes_its_arguments_to_dagster_dev(argv):
    command = dagster_dev_command(parse_args(argv).dagster_args)
    assert command[-4:] == ["-w", str(settings.PROJECT_ROOT / "workspace.yaml"), "-p", "3001"]
    # dagster dev's own parser accepts the line (without starting anything)
    params = dev_command.make_context("dagster dev", command[command.index("dev") + 1 :]).params
    assert params["port"] == "3001" and params["workspace"] == (str(settings.PROJECT_ROOT / "workspace.yaml"),)


def test_the_code_location_is_declared_once_and_its_name_agrees_with_the_projects():
    """workspace.yaml declares the location; pyproject.toml has no [tool.dagster] (a plain `dagster dev` uses
    workspace.yaml too), and [tool.dg.project] names it the same, else every load of the definitions warns."""
    pyproject = tomllib.loads((settings.PROJECT_ROOT / "pyproject.toml").read_text())
    [location] = yaml.safe_load((settings.PROJECT_ROOT / "workspace.yaml").read_text())["load_from"]
    assert "dagster" not in pyproject["tool"]
    assert location["python_module"]["location_name"] == pyproject["tool"]["dg"]["project"]["code_location_name"]


def test_dev_alone_and_other_commands_keep_their_arguments(capsys):
    assert parse_args(["dev"]).dagster_args == []
    with pytest.raises(SystemExit):
        parse_args(["encode", "--model", "org/m", "--port", "1", "text"])
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --port\n")


# -- stopping: a signal to `taxo-pipeline dev` stops every process it started (issue 32) ------------------


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # gone, or a zombie
        return []


def _dagster_dev(dev: psutil.Process) -> psutil.Process | None:
    return next((p for p in dev.children() if {"dagster", "dev"} <= set(_cmdline(p))), None)


def _dev_tree(dev: subprocess.Popen, log: Path) -> tuple[list[psutil.Process], int]:
    """Every process of `taxo-pipeline dev` once its daemon runs too, and dagster dev's process group."""
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        tree = psutil.Process(dev.pid).children(recursive=True)
        leader = _dagster_dev(psutil.Process(dev.pid))
        if leader and any("dagster._daemon" in _cmdline(p) for p in tree):
            return [psutil.Process(dev.pid), *tree], os.getpgid(leader.pid)
        time.sleep(1)
    raise AssertionError(f"no dagster daemon under taxo-pipeline dev after {START_BOUND_S}s:\n{_tail(log)}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_stops_dev_and_every_process_it_started(signum, workspace, tiny_catalogue_entries, monkeypatch):
    """SIGTERM (kill, systemd, docker stop), SIGINT (Ctrl-C: the terminal signals dev's process group) and
    SIGHUP (the terminal closed): dagster dev's webserver, daemon and code servers and the SIE server stop."""
    catalogue = write_catalogue(workspace / "models.yaml", [tiny_catalogue_entries[TINY_CROSS_ENCODER]])
    for name, value in {"TAXO_MODELS": catalogue, "DAGSTER_HOME": _dev_home(workspace)}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("SIE_BASE_URL", raising=False)
    monkeypatch.delenv("SIE_API_KEY", raising=False)
    port, log = free_port(), workspace / "dev.log"
    dev = _start_dev(port, log)
    tree: list[psutil.Process] = []
    try:
        sie_url = _dev_sie_url(dev, port, log)
        tree, dagster_group = _dev_tree(dev, log)
        described = {p.pid: " ".join(_cmdline(p)) for p in tree}
        names = " ".join(described.values())
        assert "dagster_webserver" in names and "dagster._daemon" in names and "sie-server" in names, names
        sent = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(dev.pid, signum)  # Ctrl-C: dev's group (start_new_session), as the terminal does
        else:
            dev.send_signal(signum)
        code = dev.wait(STOP_BOUND_S)
        stopped_s = time.monotonic() - sent
        _, alive = psutil.wait_procs(tree, timeout=5)
    finally:
        _stop(dev)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    print(f"{signum.name}: taxo-pipeline dev and its {len(tree) - 1} processes stopped in {stopped_s:.1f}s")
    assert code == 128 + signum, _tail(log)
    assert alive == [], [described[p.pid] for p in alive]
    assert not group_alive(dagster_group)  # nor any process dagster started after the tree was listed
    assert not _answers(f"http://127.0.0.1:{port}/server_info")
    assert not _answers(f"{sie_url}/readyz")
    text = log.read_text()
    assert f"{signum.name}: stopping dagster dev and its processes" in text
    assert "stopped the local SIE server" in text
    assert "killing its processes" not in text  # it stopped gracefully, within DAGSTER_STOP_S
