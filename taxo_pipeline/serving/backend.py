"""Whether the service's SIE server can answer now: a thread asks its `/readyz` every `every_s` seconds with
a short timeout, so a server that is killed, stopped (SIGSTOP) or restarting makes the service not ready
within about a second and a half, and ready again by itself once it answers. The same round asks whether
the served result was computed with the model settings the server runs now (`settings_problem`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

log = logging.getLogger(__name__)

PROBE_EVERY_S = 0.5
PROBE_TIMEOUT_S = 1.0
SIE_DOWN = "the SIE server is not answering (down, stopped or restarting)"


class BackendMonitor:
    def __init__(
        self, sie_url: str, settings_problem: Callable[[], str | None], every_s: float = PROBE_EVERY_S,
        timeout_s: float = PROBE_TIMEOUT_S, on_change: Callable[[str | None], None] = lambda _: None,
    ):  # fmt: skip
        self.url = sie_url.rstrip("/")
        self._settings_problem, self.every_s, self.timeout_s, self._on_change = settings_problem, every_s, timeout_s, on_change
        self.sie_up = False
        self.problem: str | None = "checking the SIE server"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taxo-serve-backend", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + self.every_s + 1)

    def check(self, http: httpx.Client) -> None:
        try:
            self.sie_up = http.get(f"{self.url}/readyz").status_code == 200
        except httpx.HTTPError:
            self.sie_up = False
        problem = None if self.sie_up else SIE_DOWN
        if problem is None:
            try:
                problem = self._settings_problem()
            except Exception as exc:  # a catalogue being edited: keep serving on the last verdict, say why
                log.warning(f"could not compare the served result's model settings with the catalogue: {exc}")
                problem = self.problem if self.problem != SIE_DOWN else None
        if problem != self.problem:
            log.warning(f"not ready: {problem}") if problem else log.info("ready: the SIE server answers")
            self.problem = problem
            self._on_change(problem)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as http:
            while True:
                self.check(http)
                if self._stop.wait(self.every_s):
                    return
