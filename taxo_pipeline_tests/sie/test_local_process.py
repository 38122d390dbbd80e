"""The local server's lifecycle, through ensure_sie(), LocalSIEServer and the `taxo-pipeline encode` command."""

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from taxo_pipeline.errors import InputError
from taxo_pipeline.sie import local_process
from taxo_pipeline.sie.client import InferenceClient, SIEUnavailableError
from taxo_pipeline.sie.local_process import LocalServerError, LocalSIEServer
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.sie.server import ensure_sie, lazy_sie
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.sie.sie_testkit import (
    MINILM,
    NLI_LABELS,
    TINY_CROSS_ENCODER,
    TINY_NLI,
    server_args,
    write_catalogue,
)

CLI = Path(sys.executable).parent / "taxo-pipeline"


def server_pids(port: int) -> list[int]:
    """Live `sie-server serve` processes listening on `port` (from /proc, no extra dependency)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"serve" in args and b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode():
            if any(arg.endswith(b"sie-server") for arg in args) and state != "Z":
                pids.append(int(entry.name))
    return pids


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
def local_only(monkeypatch, test_catalogue):
    monkeypatch.delenv("SIE_BASE_URL", raising=False)
    monkeypatch.setenv("TAXO_MODELS", str(test_catalogue))


def test_process_group_is_gone_after_the_block_even_when_it_raises(local_only):
    with pytest.raises(KeyboardInterrupt):
        with ensure_sie(*server_args(), [TINY_NLI]) as url:
            pids = server_pids(port_of(url))
            assert len(pids) == 1 and os.getpgid(pids[0]) == pids[0]  # a group of its own
            assert (Path(os.environ["TAXO_DATA_DIR"]) / "logs" / f"sie-server-{port_of(url)}.log").exists()
            raise KeyboardInterrupt
    assert server_pids(port_of(url)) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)
    assert all(server.port != port_of(url) for server in local_process._running)  # unregistered


def test_a_model_the_server_drops_is_named_with_the_log_tail(local_only, tiny_catalogue_entries, tmp_path):
    # The plain cross_encoder adapter is outside the server's default bundle.
    entry = tiny_catalogue_entries[TINY_CROSS_ENCODER]
    profile = {**entry["server"]["profiles"]["default"], "adapter_path": "sie_server.adapters.cross_encoder:CrossEncoderAdapter"}
    dropped = {**entry, "id": "tiny/dropped", "server": {**entry["server"], "profiles": {"default": profile}}}
    catalogue = load_catalogue(write_catalogue(tmp_path / "models.yaml", [dropped]))
    with pytest.raises(LocalServerError) as error:
        with ensure_sie(*server_args(catalogue)):
            pytest.fail("the server should not be reported ready")
    message = str(error.value)
    assert "'tiny/dropped' was dropped by the server" in message and "cross_encoder:CrossEncoderAdapter" in message
    assert "Model filter applied" in message or "Uvicorn running" in message  # the log tail
    assert server_pids(int(re.search(r"127\.0\.0\.1:(\d+)", message).group(1))) == []


def test_sie_base_url_wins_and_starts_nothing(monkeypatch):
    monkeypatch.setenv("SIE_BASE_URL", "http://sie.example:8080/")
    with ensure_sie(*server_args()) as url:
        assert url == "http://sie.example:8080"
    with ensure_sie(*server_args(), base_url="http://other:1") as url:
        assert url == "http://other:1"


def test_disabled_models_and_a_missing_server_are_clear_errors(local_only, monkeypatch, test_catalogue):
    with pytest.raises(InputError, match=rf"'openai/clip-vit-base-patch32' not enabled in {re.escape(str(test_catalogue))}"):
        with ensure_sie(*server_args(), ["openai/clip-vit-base-patch32"]):
            pass
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="run `uv sync`"):
        with ensure_sie(*server_args(), [TINY_NLI]):
            pass


def test_lazy_sie_checks_the_models_at_once_and_starts_the_server_at_the_first_request(local_only):
    with pytest.raises(InputError, match="'openai/clip-vit-base-patch32' not enabled"):
        with lazy_sie(*server_args(), ["openai/clip-vit-base-patch32"]):
            pass
    logs = Path(os.environ["TAXO_DATA_DIR"]) / "logs"
    with lazy_sie(*server_args(), [TINY_NLI]) as sie, InferenceClient(sie, Workspace.from_env().sie) as client:
        assert not sie.started and not list(logs.glob("sie-server-*.log"))
        assert client.extract(TINY_NLI, [], NLI_LABELS) == []  # nothing to send: still no server
        assert not sie.started
        assert len(client.extract(TINY_NLI, ["a straw hat"], NLI_LABELS)) == 1
        assert sie.started and client.base_url == sie() and len(server_pids(port_of(sie()))) == 1
    assert server_pids(port_of(sie())) == []  # stopped with the block


def cli_env(test_catalogue, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIE_BASE_URL", "SIE_API_KEY")}
    return {**env, "TAXO_MODELS": str(test_catalogue), **extra}


def test_encode_command_starts_encodes_through_the_cache_and_stops(test_catalogue, sie_server):
    texts = ["Handwoven straw Panama hat", "A dome tent"]
    run = subprocess.run(
        [str(CLI), "encode", "--model", MINILM, "--query", *texts],
        env=cli_env(test_catalogue), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["sie", "dim=384"], ["sie", "dim=384"]]
    assert [line.endswith(text) for line, text in zip(lines, texts)] == [True, True]
    assert lines[2] == "SIE requests: 1"
    port = int(re.search(r"starting a local SIE server .* on http://127\.0\.0\.1:(\d+)", run.stderr).group(1))
    assert "stopped the local SIE server" in run.stderr
    assert server_pids(port) == []

    # Same warehouse, another process, another server: everything comes from the cache.
    again = subprocess.run(
        [str(CLI), "encode", "--model", MINILM, "--query", *texts],
        env=cli_env(test_catalogue, SIE_BASE_URL=sie_server), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert [line.split()[0] for line in again.stdout.splitlines()] == ["cache", "cache", "SIE"]
    assert again.stdout.splitlines()[:2] == [line.replace("sie  ", "cache", 1) for line in lines[:2]]
    assert again.stdout.splitlines()[2] == "SIE requests: 0"


def test_encode_starts_no_server_when_every_text_is_cached(test_catalogue, sie_workspace):
    """Issue 32: the server starts at the first request, and a run whose texts are all cached sends none."""
    texts = ["Handwoven straw Panama hat", "A dome tent"]
    first = subprocess.run(
        [str(CLI), "encode", "--model", MINILM, *texts], env=cli_env(test_catalogue), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[2] == "SIE requests: 1" and "starting a local SIE server" in first.stderr

    # Same warehouse, no SIE_BASE_URL: every process the command starts, while it runs.
    command = subprocess.Popen(
        [str(CLI), "encode", "--model", MINILM, *texts], env=cli_env(test_catalogue), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = set()
    while command.poll() is None:
        with contextlib.suppress(psutil.Error):
            started |= {" ".join(p.cmdline()) for p in psutil.Process(command.pid).children(recursive=True)}
        time.sleep(0.05)
    out, err = command.communicate()
    assert command.returncode == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["cache", "cache", "SIE"]
    assert lines[:2] == [line.replace("sie  ", "cache", 1) for line in first.stdout.splitlines()[:2]]
    assert lines[2] == "SIE requests: 0"
    assert "SIE server" not in err and not [cmd for cmd in started if "sie-server" in cmd], (err, started)
    assert len(list((sie_workspace / "data" / "logs").glob("sie-server-*.log"))) == 1  # the first run's server


def test_sigterm_while_the_server_starts_leaves_nothing_behind(test_catalogue):
    proc = subprocess.Popen(
        [str(CLI), "encode", "--model", TINY_NLI, "x"],
        env=cli_env(test_catalogue), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    # the first log line naming the server's address (warnings may come before it)
    while not (found := re.search(r"on http://127\.0\.0\.1:(\d+)", proc.stderr.readline())):
        assert proc.poll() is None, "the command ended before starting a server"
    port = int(found.group(1))
    deadline = time.monotonic() + 30
    while not server_pids(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_pids(port), "the server process should be running by now"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()
    assert server_pids(port) == []
    proc.stderr.close()


# SIGTERM lands while a finalizer runs, where Python drops the handler's SystemExit.
SIGTERM_IN_A_FINALIZER = f"""
import os, signal, time
from taxo_pipeline.sie import local_process
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.workspace import Workspace

local_process.TERM_GRACE_S = 2.0
workspace = Workspace.from_env()

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)

spec = load_catalogue(workspace.settings.models)[{TINY_NLI!r}]
with local_process.LocalSIEServer([spec], workspace.sie, workspace.data_dir) as server:
    print(server.port, flush=True)
    Finalized()
    print("SystemExit dropped", flush=True)
    time.sleep(60)
"""


def test_a_sigterm_whose_exit_python_drops_still_ends_the_process_and_its_server(test_catalogue):
    run = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_A_FINALIZER],
        env=cli_env(test_catalogue), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    port, *after = run.stdout.splitlines() or [""]
    assert after == ["SystemExit dropped"], run.stderr
    assert run.returncode == 128 + signal.SIGTERM, run.stderr
    assert "still running 2s after SIGTERM; stopping its SIE servers and exiting" in run.stderr
    assert server_pids(int(port)) == []


def test_a_local_server_killed_mid_run_is_named_at_the_next_call(test_catalogue):
    catalogue, workspace = load_catalogue(test_catalogue), Workspace.from_env()
    with (
        LocalSIEServer([catalogue[TINY_NLI]], workspace.sie, workspace.data_dir) as server,
        InferenceClient(server.base_url, workspace.sie) as client,
    ):
        assert len(client.extract(TINY_NLI, ["a straw hat"], NLI_LABELS)) == 1
        os.kill(server.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(SIEUnavailableError) as error:
            client.extract(TINY_NLI, ["a dome tent"], NLI_LABELS)
        assert time.monotonic() - started < 10  # at once, not after retrying for the provision timeout
    message = str(error.value)
    assert message.startswith(
        f"the local SIE server on {server.base_url} exited with code -9 (killed by SIGKILL); "
        f"last lines of {server.log_path}:\n"
    )
    assert "Uvicorn running" in message or "Preload complete" in message  # its log tail
    assert message.endswith("Run the command again to start a new server.")


def test_the_url_of_a_remote_server_is_logged_without_its_credentials(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("SIE_BASE_URL", "https://team:s3cr3t-token@sie.example:8443/?key=abc123")
    with ensure_sie(*server_args()) as url:
        assert url == "https://team:s3cr3t-token@sie.example:8443/?key=abc123"  # the client still needs them
    assert caplog.messages == ["using the SIE server at https://***@sie.example:8443/?key=***"]
