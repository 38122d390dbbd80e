"""The warm SIE server: the local server `taxo-pipeline dev` (or `serve`) runs, shared with every command.

Its owner PUBLISHES it in a state file (`SIESettings.state_file`, written atomically, removed when the
owner stops): the URL, the owner's pid with its start time and host, the catalogue it follows, the
device, and the fingerprint (catalogue entry and weights) of every model it serves now. A command's
ensure_sie() uses that server when
- the owner is a live process of this host (the same pid AND start time: not a pid reused since),
- the server answers /readyz, and
- it serves every model the command needs with the same fingerprint, on the same device. When both
  follow the same catalogue file the command waits a few seconds for the follower to catch up with an
  edit; another catalogue (TAXO_MODELS) or another model means a server of the command's own.
Otherwise the command logs why and starts its own server, as without a warm one. A state file whose
owner is gone is removed.

Writers take a lock beside the file: a second `dev` never overwrites a live owner's file (it keeps its
own server for its own runs and publishes it once the first owner is gone), and a stale file is
removed only while it is still the same stale file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taxo_pipeline.files import write_atomic
from taxo_pipeline.locks import file_lock
from taxo_pipeline.processes import process_start
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.model_catalogue import ModelSpec, fingerprint

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0
# How long a command waits for the follower (polling every 2 s) to serve a catalogue edit.
CATCH_UP_S = 6.0


@dataclass(frozen=True)
class WarmServer:
    """What the state file says: the server, its owner, and the models it serves ({id: fingerprint})."""

    url: str
    owner: str
    pid: int
    pid_start: str
    host: str
    port: int
    server_pid: int | None
    catalogue: str
    device: str
    models: dict[str, str]
    started_at: str

    def describe(self) -> str:
        return f"the warm SIE server of {self.owner} (pid {self.pid}) at {self.url}"

    def gone(self) -> str | None:
        """Why the owner no longer runs (None while it does): the state file is stale then."""
        started = process_start(self.pid)
        if started is None:
            return f"its owner {self.owner} (pid {self.pid}) is gone"
        if started != self.pid_start:
            return f"pid {self.pid} is now another process than its owner {self.owner}"
        return None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=HEALTH_TIMEOUT_S):  # noqa: S310
                return True
        except (urllib.error.URLError, OSError):
            return False

    def mismatch(self, specs: Sequence[ModelSpec], device: str) -> str | None:
        """Why this server cannot serve `specs` on `device` as the command defines them (None: it can)."""
        if self.device != device:
            return f"it runs models on {self.device}, the command on {device}"
        if wrong := [spec.id for spec in specs if self.models.get(spec.id) != fingerprint(spec)]:
            source = specs[0].source
            return f"it does not serve {', '.join(wrong)} as {source} defines them (it follows {self.catalogue})"
        return None


def find_warm_server(specs: Sequence[ModelSpec], sie: SIESettings, logger: Any = None) -> WarmServer | None:
    """The warm server published in `sie.state_file` when it is alive and serves `specs` on `sie.device`;
    else None, with one log line saying why (nothing is logged when no server is published)."""
    logger = logger or log
    if not sie.warm:
        return None
    path, device = sie.state_file, sie.device
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        state, problem = _read(path)
        if problem is None and state is not None:
            problem = _not_usable(path, state)
        if problem is not None:
            logger.info(f"{problem}; starting a local SIE server")
            return None
        if state is None:
            return None
        why = state.mismatch(specs, device)
        if why is None:
            return state
        same_catalogue = all(str(spec.source) == state.catalogue for spec in specs)
        if not same_catalogue or time.monotonic() > deadline:
            logger.info(f"not using {state.describe()}: {why}; starting a local SIE server")
            return None
        time.sleep(0.5)


def _not_usable(path: Path, state: WarmServer) -> str | None:
    if state.host != socket.gethostname():
        return f"not using the SIE server in {path}: it runs on host {state.host}"
    if why := state.gone():
        removed = _remove_if(path, lambda current: current == state)
        return f"ignoring the stale SIE server state file {path}: {why}" + ("; removed it" if removed else "")
    if not state.answers():
        return f"not using {state.describe()}: it does not answer {state.url}/readyz"
    return None


def _read(path: Path) -> tuple[WarmServer | None, str | None]:
    """(state, None), (None, None) when there is no file, or (None, why) for a file that is no state."""
    try:
        return WarmServer(**json.loads(path.read_text())), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, TypeError) as exc:
        # Written atomically, so never half-written: a file that does not parse is not ours to trust.
        return None, f"ignoring the SIE server state file {path}: it is not a state this version writes ({exc})"


def _remove_if(path: Path, condition: Callable[[WarmServer], bool]) -> bool:
    """Remove the state file if `condition(state now in it)` still holds, under the writers' lock."""
    with file_lock(_lock_path(path)):
        state, _ = _read(path)
        if state is None or not condition(state):
            return False
        path.unlink(missing_ok=True)
        return True


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class Publisher:
    """The owner's side: publishes its server in `state_file`, never over a live owner's."""

    def __init__(self, owner: str, state_file: Path, logger: Any = None):
        self.owner = owner
        self.log = logger or log
        self.path = state_file
        self.published = False
        self._pid, self._pid_start = os.getpid(), process_start(os.getpid()) or ""
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._held_by: str | None = None

    def publish(
        self, url: str, server_pid: int | None, catalogue: Path, device: str, models: Mapping[str, str]
    ) -> bool:
        """Write (or update) the state; False, and one log line per other owner, while another live
        owner's file is there."""
        state = WarmServer(
            url=url, owner=self.owner, pid=self._pid, pid_start=self._pid_start, host=socket.gethostname(),
            port=int(url.rsplit(":", 1)[1]), server_pid=server_pid, catalogue=str(catalogue), device=device,
            models=dict(models), started_at=self._started_at,
        )  # fmt: skip
        with file_lock(_lock_path(self.path)):
            current, _ = _read(self.path)
            if current is not None and not self._mine(current) and current.host == state.host and not current.gone():
                if self._held_by != current.describe():
                    self.log.info(
                        f"{current.describe()} is already published in {self.path}: this one ({url}) serves only "
                        "this process's runs, and is published once that one stops"
                    )
                    self._held_by = current.describe()
                return False
            if current != state:
                write_atomic(self.path, lambda tmp: tmp.write_text(json.dumps(asdict(state), indent=2)))
        if not self.published:
            self.log.info(f"published the SIE server {url} in {self.path} for every command to use")
        self.published, self._held_by = True, None
        return True

    def withdraw(self) -> None:
        """Remove the state file if it is this owner's (before the server stops: no command picks it up then)."""
        if self.published:
            _remove_if(self.path, self._mine)
            self.published = False

    def _mine(self, state: WarmServer) -> bool:
        return state.pid == self._pid and state.pid_start == self._pid_start
