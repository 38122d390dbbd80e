"""A local SIE server for the enabled models, started on demand and always stopped.

Without SIE_BASE_URL, `ensure_sie()` starts `sie-server` (a project dependency) on CPU for the
enabled catalogue models, waits until every one is loaded, yields its URL and stops the whole
process group afterwards: on success, on error, on Ctrl-C, on SIGTERM and at interpreter exit.
"""

from __future__ import annotations

import atexit
import copy
import ctypes
import hashlib
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from taxo_pipeline import settings
from taxo_pipeline.errors import InputError
from taxo_pipeline.sie.catalogue import Catalogue, ModelSpec, load_catalogue

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 600.0
STOP_GRACE_S = 15.0
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


def server_config(spec: ModelSpec, device: str = "cpu") -> dict[str, Any]:
    """The model YAML sie-server reads: the catalogue's `server:` with local weights and CPU precision."""
    config = {"sie_id": spec.id, **copy.deepcopy(dict(spec.server))}
    weights = spec.resolve_weights()
    if weights:
        # With hf_id present the server's cache layer still tries the hub.
        config.pop("hf_id", None)
        config.pop("hf_revision", None)
        config["weights_path"] = str(weights)
    if device == "cpu":
        # Shipped configs ask for float16/bfloat16, which CPU kernels do not serve well.
        for profile in config.get("profiles", {}).values():
            if "compute_precision" in profile:
                profile["compute_precision"] = None
    return config


def write_models_dir(specs: Sequence[ModelSpec], device: str = "cpu", root: Path | None = None) -> Path:
    """One YAML per model in a folder named by the content, so concurrent servers never clash."""
    configs = {spec.slug: server_config(spec, device) for spec in specs}
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]
    folder = (root or settings.data_dir() / "sie-models") / digest
    folder.mkdir(parents=True, exist_ok=True)
    for slug, config in configs.items():
        target = folder / f"{slug}.yaml"
        tmp = folder / f".{slug}.yaml.{os.getpid()}"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, target)
    return folder


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local http URL)
        return json.load(response)


class LocalSIEServer:
    """One `sie-server serve` process (in its own process group) for the given models."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        device: str | None = None,
        start_timeout_s: float | None = None,
        logger: Any = None,
    ):
        if not specs:
            raise InputError("the local SIE server needs at least one model")
        self.specs = list(specs)
        self.device = device or os.environ.get("TAXO_SIE_DEVICE", "cpu")
        self.start_timeout_s = start_timeout_s or float(
            os.environ.get("TAXO_SIE_START_TIMEOUT_S", DEFAULT_START_TIMEOUT_S)
        )
        self.log = logger or log
        self.port: int | None = None
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
        executable = sie_server_executable()
        models_dir = write_models_dir(self.specs, self.device)
        ids = [spec.id for spec in self.specs]
        self.port = free_port()
        logs = settings.data_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"sie-server-{self.port}.log"
        # The server's IPC socket defaults to one fixed /tmp path; give each server its own.
        self._ipc_dir = tempfile.mkdtemp(prefix="taxo-sie-")
        env = {
            **ONE_CLIENT_DEFAULTS,
            **os.environ,
            "SIE_TELEMETRY_DISABLED": "1",
            "SIE_IPC_SOCKET_PATH": os.path.join(self._ipc_dir, "ipc.sock"),
        }
        # Offline unless a model still has to come from the hub (or the user decided otherwise).
        if all(spec.resolve_weights() for spec in self.specs):
            env.setdefault("HF_HUB_OFFLINE", "1")
        command = [
            str(executable), "serve", "--device", self.device, "--host", "127.0.0.1", "--port", str(self.port),
            "--models-dir", str(models_dir), "--no-hf-fallback", "--preload", ",".join(ids),
        ]  # fmt: skip
        self.log.info(f"starting a local SIE server for {', '.join(ids)} on {self.base_url} (log: {self.log_path})")
        started = time.monotonic()
        with self.log_path.open("wb") as log_file:
            self._proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent() if threading.current_thread() is threading.main_thread() else None,
            )
        _register(self)
        try:
            self._wait_until_ready(ids)
        except BaseException:
            self.stop()
            raise
        self.log.info(f"local SIE server ready on {self.base_url} in {time.monotonic() - started:.0f}s")

    def _wait_until_ready(self, ids: list[str]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._proc.poll() is not None:
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
        # The server silently drops models whose adapter is outside its bundle, and only
        # logs a failed preload: check each model is listed and loaded.
        listed = {m["name"]: m for m in _get_json(f"{self.base_url}/v1/models")["models"]}
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


@contextmanager
def ensure_sie(
    catalogue: Catalogue | None = None,
    models: Sequence[str] | None = None,
    *,
    base_url: str | None = None,
    logger: Any = None,
) -> Iterator[str]:
    """Yield the URL of an SIE server: `base_url`, else SIE_BASE_URL, else a local one started here.

    The local server serves `models` (ids, which must be enabled in the catalogue) or every
    enabled model, and is stopped when the block exits, however it exits.
    """
    url = base_url or os.environ.get("SIE_BASE_URL")
    if url:
        (logger or log).info(f"using the SIE server at {url}")
        yield url.rstrip("/")
        return
    catalogue = catalogue or load_catalogue()
    enabled = {spec.id: spec for spec in catalogue.enabled()}
    if models is None:
        specs = list(enabled.values())
    else:
        if disabled := [m for m in models if m not in enabled]:
            raise InputError(
                f"model(s) {', '.join(map(repr, disabled))} not enabled in {catalogue.path}: "
                "add them or set `enabled: true` to serve them locally, or set SIE_BASE_URL"
            )
        specs = [enabled[m] for m in dict.fromkeys(models)]
    if not specs:
        raise InputError(f"no model is enabled in {catalogue.path}: set `enabled: true` on one, or set SIE_BASE_URL")
    with LocalSIEServer(specs, logger=logger) as server:
        yield server.base_url


# -- cleanup when the interpreter goes away -------------------------------------------------------

_running: set[LocalSIEServer] = set()
_lock = threading.Lock()
_previous_sigterm: Any = None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _die_with_parent():
    """preexec_fn: the kernel SIGTERMs the server if this process dies, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # bound before fork: the child only calls it
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


def _on_sigterm(signum: int, frame: object) -> None:
    # Unwinds every `with ensure_sie()` block, and atexit runs after it.
    raise SystemExit(128 + signum)


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
