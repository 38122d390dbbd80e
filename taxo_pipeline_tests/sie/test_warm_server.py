"""The warm SIE server: commands use the server `taxo-pipeline dev` publishes instead of starting their own,
and ignore a state file whose owner is gone, through real sie-server processes and real commands."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from taxo_pipeline import settings
from taxo_pipeline.errors import InputError
from taxo_pipeline.processes import process_start
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.dev_server import dev_sie
from taxo_pipeline.sie.local_process import free_port
from taxo_pipeline.sie.model_catalogue import Catalogue, fingerprint, load_catalogue
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.sie.warm import Publisher, find_warm_server
from taxo_pipeline_tests.sie.sie_testkit import TINY_CLIP, TINY_NLI, build_tiny_models, server_args, write_catalogue
from taxo_pipeline_tests.sie.test_local_process import CLI, server_pids

TEXT = "a straw hat"


@pytest.fixture
def catalogue(tiny_catalogue_entries, tmp_path, monkeypatch):
    """A catalogue with tiny/clip enabled and tiny/nli disabled; write(**{id: on}) edits it."""
    entries = {
        TINY_CLIP: dict(tiny_catalogue_entries[TINY_CLIP]),
        TINY_NLI: {**tiny_catalogue_entries[TINY_NLI], "enabled": False},
    }
    path = tmp_path / "models.yaml"
    monkeypatch.setenv("TAXO_MODELS", str(path))
    monkeypatch.delenv("SIE_BASE_URL", raising=False)

    def write(**enabled: bool) -> Path:
        for model_id, on in enabled.items():
            entries[model_id]["enabled"] = on
        return write_catalogue(path, list(entries.values()))

    write()
    return write


def catalogue_now() -> Catalogue:
    """The catalogue TAXO_MODELS names, as a command loads it."""
    return load_catalogue(settings.current().models)


def encode_command(*extra: str) -> subprocess.CompletedProcess:
    """`taxo-pipeline encode --model tiny/clip TEXT` in a process of its own, without SIE_BASE_URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIE_BASE_URL", "SIE_API_KEY")}
    return subprocess.run(
        [str(CLI), "encode", "--model", TINY_CLIP, *extra, TEXT], env=env, capture_output=True, text=True, timeout=300
    )


def printed_head(vector: np.ndarray) -> str:
    """The first values as `encode` prints them."""
    return "[" + ", ".join(f"{x:+.4f}" for x in vector[:4]) + ", ...]"


def test_a_command_uses_the_dev_server_starts_none_and_the_state_goes_with_it(catalogue):
    state_file = settings.current().sie.state_file
    with dev_sie(*server_args(), poll_s=0.5) as url:
        state = json.loads(state_file.read_text())
        assert state["url"] == url and state["pid"] == os.getpid() and state["pid_start"] == process_start(os.getpid())
        assert state["host"] == socket.gethostname() and state["port"] == int(url.rsplit(":", 1)[1])
        assert state["catalogue"] == os.environ["TAXO_MODELS"] and state["owner"] == "taxo-pipeline dev"
        assert state["models"] == {TINY_CLIP: fingerprint(catalogue_now()[TINY_CLIP])}
        assert server_pids(state["port"]) == [state["server_pid"]]
        expected = InferenceClient(url, settings.current().sie).encode(TINY_CLIP, [TEXT], is_query=True)[0]

        run = encode_command("--query")
        assert run.returncode == 0, run.stderr
        assert f"using the warm SIE server of taxo-pipeline dev (pid {os.getpid()}) at {url}" in run.stderr
        assert "starting a local SIE server" not in run.stderr
        assert run.stdout.splitlines()[0].split(None, 2)[:3] == ["sie", "dim=16", f"{printed_head(expected)}  {TEXT}"]
        assert server_pids(state["port"]) == [state["server_pid"]]  # still the only server, still running
        # every local server writes its log there: the dev server's is the only one
        assert [log.name for log in (settings.current().data_dir / "logs").glob("sie-server-*.log")] == [f"sie-server-{state['port']}.log"]
    assert not state_file.exists()
    assert server_pids(state["port"]) == []


def test_a_model_enabled_a_moment_ago_is_waited_for_and_another_catalogue_gets_its_own_server(
    catalogue, tiny_catalogue_entries, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    with dev_sie(*server_args(), poll_s=0.5) as url:
        write_catalogue(
            Path(os.environ["TAXO_MODELS"]), [tiny_catalogue_entries[TINY_CLIP], tiny_catalogue_entries[TINY_NLI]]
        )
        started = time.monotonic()
        with ensure_sie(*server_args(), [TINY_NLI]) as used:  # the follower adds it within a poll
            assert used == url and time.monotonic() - started < 5
        # Another catalogue file defining tiny/clip with other weights: never the warm server.
        build_tiny_models(tmp_path / "retrained", seed=1)
        other = {**tiny_catalogue_entries[TINY_CLIP], "weights": {"path": str(tmp_path / "retrained" / "clip")}}
        specs = list(load_catalogue(write_catalogue(tmp_path / "other.yaml", [other])))
        started = time.monotonic()
        assert find_warm_server(specs, settings.current().sie) is None
        assert time.monotonic() - started < 2  # no waiting: another catalogue will not catch up
        assert f"not using the warm SIE server of taxo-pipeline dev (pid {os.getpid()}) at {url}: it does not serve " \
               f"tiny/clip as {tmp_path / 'other.yaml'} defines them (it follows {os.environ['TAXO_MODELS']}); " \
               "starting a local SIE server" in caplog.messages  # fmt: skip
        cuda = replace(settings.current().sie, device="cuda")
        assert find_warm_server(list(catalogue_now()), cuda) is None  # another device
        assert settings.current().sie.state_file.exists()


def stale_state(pid: int, pid_start: str, port: int) -> dict:
    return {
        "url": f"http://127.0.0.1:{port}", "owner": "taxo-pipeline dev", "pid": pid, "pid_start": pid_start,
        "host": socket.gethostname(), "port": port, "server_pid": None, "catalogue": os.environ["TAXO_MODELS"],
        "device": "cpu", "models": {TINY_CLIP: fingerprint(catalogue_now()[TINY_CLIP])},
        "started_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_stale_state_file_is_ignored_removed_and_the_command_starts_its_own_server(catalogue):
    state_file = settings.current().sie.state_file
    state_file.parent.mkdir(parents=True)
    pid = dead_pid()
    state_file.write_text(json.dumps(stale_state(pid, "12345", free_port())))
    run = encode_command()
    assert run.returncode == 0, run.stderr
    assert (
        f"ignoring the stale SIE server state file {state_file}: its owner taxo-pipeline dev (pid {pid}) is gone; "
        "removed it; starting a local SIE server"
    ) in run.stderr
    port = re.search(r"starting a local SIE server for tiny/clip on http://127\.0\.0\.1:(\d+)", run.stderr).group(1)
    assert [log.name for log in (settings.current().data_dir / "logs").glob("sie-server-*.log")] == [f"sie-server-{port}.log"]
    assert run.stdout.splitlines()[0].split()[:2] == ["sie", "dim=16"]
    assert not state_file.exists()


def test_a_reused_pid_is_stale_and_a_live_owner_whose_server_does_not_answer_is_kept(catalogue, caplog):
    caplog.set_level(logging.INFO)
    sie, specs = settings.current().sie, list(catalogue_now())
    state_file = sie.state_file
    state_file.parent.mkdir(parents=True)
    port = free_port()
    state_file.write_text(json.dumps(stale_state(os.getpid(), "1", port)))  # this pid, another start time
    assert find_warm_server(specs, sie) is None and not state_file.exists()
    assert f"pid {os.getpid()} is now another process than its owner taxo-pipeline dev; removed it" in caplog.text

    state_file.write_text(json.dumps(stale_state(os.getpid(), process_start(os.getpid()), port)))
    assert find_warm_server(specs, sie) is None
    assert state_file.exists()  # its owner lives: it may be restarting its server
    assert f"it does not answer http://127.0.0.1:{port}/readyz; starting a local SIE server" in caplog.messages[-1]

    state_file.write_text("{not json")
    assert find_warm_server(specs, sie) is None
    assert caplog.messages[-1].startswith(f"ignoring the SIE server state file {state_file}: it is not a state")


OTHER_OWNER = textwrap.dedent("""
    import signal, sys
    from taxo_pipeline import settings
    from taxo_pipeline.sie.warm import Publisher
    publisher = Publisher("taxo-pipeline serve", settings.current().sie.state_file)
    publisher.publish("http://127.0.0.1:1", None, "/nowhere/models.yaml", "cpu", {})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("published", flush=True)
        signal.pause()
    finally:
        publisher.withdraw()
""")


def test_a_second_owner_never_overwrites_a_live_state_file_and_publishes_once_it_is_gone(catalogue, caplog):
    caplog.set_level(logging.INFO)
    state_file = settings.current().sie.state_file
    for ending in (signal.SIGTERM, signal.SIGKILL):  # a clean stop withdraws; a killed owner leaves a stale file
        other = subprocess.Popen([sys.executable, "-c", OTHER_OWNER], stdout=subprocess.PIPE, text=True)
        try:
            assert other.stdout.readline() == "published\n"
            before = state_file.read_text()
            mine = Publisher("taxo-pipeline dev", state_file)
            assert not mine.publish("http://127.0.0.1:2", None, Path("/models.yaml"), "cpu", {})
            assert not mine.publish("http://127.0.0.1:2", None, Path("/models.yaml"), "cpu", {})
            assert state_file.read_text() == before
            held = [m for m in caplog.messages if "is already published in" in m]
            assert held == [
                f"the warm SIE server of taxo-pipeline serve (pid {other.pid}) at http://127.0.0.1:1 is already "
                f"published in {state_file}: this one (http://127.0.0.1:2) serves only this process's runs, "
                "and is published once that one stops"
            ]  # once, not at every try
        finally:
            other.send_signal(ending)
            other.wait(timeout=30)
            other.stdout.close()
        assert state_file.exists() == (ending == signal.SIGKILL)
        assert mine.publish("http://127.0.0.1:2", None, Path("/models.yaml"), "cpu", {})
        assert json.loads(state_file.read_text())["pid"] == os.getpid()
        mine.withdraw()
        assert not state_file.exists()
        caplog.clear()


def test_taxo_sie_warm_0_never_reads_the_state_file(catalogue, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    state_file = settings.current().sie.state_file
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    specs = list(catalogue_now())
    monkeypatch.setenv("TAXO_SIE_WARM", "0")
    assert find_warm_server(specs, settings.current().sie) is None
    assert caplog.messages == [] and state_file.exists()
    monkeypatch.setenv("TAXO_SIE_WARM", "maybe")
    with pytest.raises(InputError, match=r"TAXO_SIE_WARM='maybe': expected 1 .* or 0"):
        settings.current()  # as every front door reads it, before any server is looked for
