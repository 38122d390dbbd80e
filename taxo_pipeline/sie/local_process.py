"""The local `sie-server` process: started in its own process group, waited on until its models are
loaded, watched for an early exit, and always stopped with its whole group: on success, on error, on
Ctrl-C, on SIGTERM and at interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taxo_pipeline.errors import InputError
from taxo_pipeline.processes import child_environment
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.model_catalogue import ModelSpec
from taxo_pipeline.sie.model_yaml import write_models_dir

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
# How long a SIGTERMed process may take to unwind before it stops its servers and exits anyway.
TERM_GRACE_S = STOP_GRACE_S + 5
LOG_TAIL_LINES = 40
# sie-server's defaults suit a shared server: torch gets half the cores (the rest decode images and
# parse documents) and each request waits ~15 ms to be batched with others. A local server has one
# sequential client, so it gets every core and no wait: about 1.4x the throughput on 2 CPUs
# (bench/benchmark.py). Variables already in the environment win.
ONE_CLIENT_DEFAULTS = {
    "SIE_TORCH_NUM_THREADS": str(os.cpu_count() or 1),
    "SIE_ADAPTIVE_BATCHING__ENABLED": "false",
    "SIE_MAX_BATCH_WAIT_MS": "0.1",
    "SIE_IDLE_COALESCE_MS": "0",
    "SIE_COALESCE_MS": "0",
}


class LocalServerError(RuntimeError):
    """The local SIE server could not start or lost a model; the message includes its log tail."""


def sie_server_executable() -> Path:
    """The project venv's `sie-server` script, else one on PATH."""
    beside = Path(sys.executable).parent / "sie-server"
    found = beside if beside.is_file() else shutil.which("sie-server")
    if not found:
        raise FileNotFoundError(
            f"sie-server is not installed (looked in {beside.parent} and on PATH). It is a project dependency: "
            "run `uv sync` in the project folder, or set SIE_BASE_URL to use a running SIE server."
        )
    return Path(found)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalSIEServer:
    """One `sie-server serve` process (in its own process group) for the given models, on `sie`'s device,
    with its log in <data_dir>/logs.

    `port` and `models_dir` default to a free port and a folder written for `specs` (in <data_dir>/sie-models);
    the dev server passes its own (a fixed port across restarts, a folder it keeps in step with the catalogue).
    `env_defaults` are server variables that the environment may override. With `offline_if_local`,
    HF_HUB_OFFLINE defaults to 1 when every model has local weights.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        sie: SIESettings,
        data_dir: Path,
        *,
        logger: Any = None,
        port: int | None = None,
        models_dir: Path | None = None,
        env_defaults: Mapping[str, str] | None = None,
        offline_if_local: bool = True,
    ):
        if not specs:
            raise InputError("the local SIE server needs at least one model")
        self.specs = list(specs)
        self.device = sie.device
        self.start_timeout_s = sie.start_timeout_s
        self.data_dir = data_dir
        self.log = logger or log
        self.port = port
        self.models_dir = models_dir
        self.env_defaults = dict(env_defaults or {})
        self.offline_if_local = offline_if_local
        self.log_path: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._ipc_dir: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Also the process group id: the server is started in a new session."""
        return self._proc.pid if self._proc else None

    def __enter__(self) -> LocalSIEServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ids = [spec.id for spec in self.specs]
        command = self._command(ids)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"sie-server-{self.port}.log"
        self.log.info(f"starting a local SIE server for {', '.join(ids)} on {self.base_url} (log: {self.log_path})")
        started = time.monotonic()
        with self.log_path.open("wb") as log_file:
            self._proc = subprocess.Popen(
                command,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent() if threading.current_thread() is threading.main_thread() else None,
            )
        _register(self)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.log.info(f"local SIE server ready on {self.base_url} in {time.monotonic() - started:.0f}s")

    def _command(self, ids: list[str]) -> list[str]:
        executable = sie_server_executable()
        models_dir = self.models_dir or write_models_dir(self.specs, self.device, self.data_dir / "sie-models")
        self.port = self.port or free_port()
        return [
            str(executable), "serve", "--device", self.device, "--host", "127.0.0.1", "--port", str(self.port),
            "--models-dir", str(models_dir), "--no-hf-fallback", "--preload", ",".join(ids),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        # The server's IPC socket defaults to one fixed /tmp path; give each server its own.
        self._ipc_dir = tempfile.mkdtemp(prefix="taxo-sie-")
        env = {
            **ONE_CLIENT_DEFAULTS,
            **self.env_defaults,
            **child_environment(
                SIE_TELEMETRY_DISABLED="1", SIE_IPC_SOCKET_PATH=os.path.join(self._ipc_dir, "ipc.sock")
            ),
        }
        # Offline unless a model still has to come from the hub (or the user decided otherwise).
        if self.offline_if_local and all(spec.resolve_weights() for spec in self.specs):
            env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.exited():
                raise self._error(f"sie-server exited with code {self._proc.returncode} while starting")
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2):  # noqa: S310
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise self._error(
                    f"sie-server was not ready after {self.start_timeout_s:.0f}s "
                    "(raise TAXO_SIE_START_TIMEOUT_S if the models are large or still downloading)"
                )
            time.sleep(0.5)
        self._check_models_loaded()

    def _check_models_loaded(self) -> None:
        # The server silently drops models whose adapter is outside its bundle, and only
        # logs a failed preload: check each model is listed and loaded.
        listed = {m["name"]: m for m in self.served_models()}
        problems = []
        for spec in self.specs:
            model = listed.get(spec.id)
            if model is None:
                adapter = spec.server["profiles"].get("default", {}).get("adapter_path")
                problems.append(
                    f"{spec.id!r} was dropped by the server (is its adapter {adapter} outside the server's bundle?)"
                )
            elif not model.get("loaded"):
                problems.append(
                    f"{spec.id!r} failed to load (state {model.get('state')}, error {model.get('last_error')})"
                )
        if problems:
            raise self._error("; ".join(problems))

    def served_models(self) -> list[dict[str, Any]]:
        """The server's /v1/models entries: `name`, `loaded`, `state` ..."""
        with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=5) as response:  # noqa: S310
            return json.load(response)["models"]

    def exited(self, wait_s: float = 0.0) -> bool:
        """True once the process has ended, waiting up to `wait_s` for it (reaps it: its exit code is known)."""
        if self._proc is None:
            return False
        try:
            self._proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_report(self) -> str:
        code = self._proc.returncode
        how = f"{code} (killed by {signal.Signals(-code).name})" if code < 0 else str(code)
        return f"the local SIE server on {self.base_url} exited with code {how}; last lines of {self.log_path}:\n{self.log_tail()}"

    def _error(self, problem: str) -> LocalServerError:
        return LocalServerError(
            f"local SIE server on {self.base_url}: {problem}. Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.log.warning(f"local SIE server {self.base_url} ignored SIGTERM for {STOP_GRACE_S:.0f}s; killing it")
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            # Anything the server spawned into its group goes too.
            _signal_group(proc.pid, signal.SIGKILL)
        finally:
            _unregister(self)
            if self._ipc_dir:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)
        self.log.info(f"stopped the local SIE server on {self.base_url}")


def exit_report(url: str) -> str | None:
    """Why the local server at `url`, started by this process, stopped answering: None while it runs
    (or when this process did not start it)."""
    with _lock:
        servers = [server for server in _running if server.base_url == url.rstrip("/")]
    # A killed process closes its sockets a moment before it can be reaped: give it that moment.
    return next((server.exit_report() for server in servers if server.exited(wait_s=1.0)), None)


# -- cleanup when the interpreter goes away -------------------------------------------------------

_running: set[LocalSIEServer] = set()
_lock = threading.Lock()
_previous_sigterm: Any = None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def die_with_parent():
    """preexec_fn: the kernel SIGTERMs the child (the server, dagster dev) if this process dies, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # bound before fork: the child only calls it
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


def _on_sigterm(signum: int, frame: object) -> None:
    # Unwinds every `with ensure_sie()` block, and atexit runs after it. Python drops an exception raised
    # while a finalizer runs (say, an HTTP response's close() during the readiness polls): the watchdog
    # then ends the process, its servers stopped, rather than leave it working on.
    threading.Thread(target=_exit_after_grace, args=(128 + signum,), name="sigterm-watchdog", daemon=True).start()
    raise SystemExit(128 + signum)


def _exit_after_grace(code: int) -> None:
    time.sleep(TERM_GRACE_S)
    log.warning(f"still running {TERM_GRACE_S:.0f}s after SIGTERM; stopping its SIE servers and exiting")
    _stop_all()
    os._exit(code)


def _register(server: LocalSIEServer) -> None:
    global _previous_sigterm
    with _lock:
        if not _running and threading.current_thread() is threading.main_thread():
            # Only take SIGTERM over from the default action (which would orphan the server);
            # a host like Dagster that handles SIGTERM itself keeps its handler.
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        _running.add(server)


def _unregister(server: LocalSIEServer) -> None:
    global _previous_sigterm
    with _lock:
        _running.discard(server)
        if not _running and _previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _previous_sigterm)
            _previous_sigterm = None


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()
