"""The local SIE server `taxo-pipeline dev` shares with every run: it follows the model catalogue.

The server keeps its port for its whole life, so the SIE_BASE_URL given to `dagster dev` stays valid,
and a follower thread keeps its --models-dir in step with the catalogue every POLL_S seconds:

- sie-server watches that folder (hot reload): a model file renamed into it is registered and loaded
  at its first request, and a changed file unloads the old model first. So a model enabled while the
  UI runs is served within seconds, well before the sensor (every minute) launches its runs.
- Local weights are named in the file through a link whose name carries the model's fingerprint, so
  changed weight files change the file and the model is reloaded from them.
- sie-server looks a deleted file up by its name (`org__name`), not by the model id, so removing the
  file of a disabled model does not unload it. The dev server runs with SIE_IDLE_EVICT_S (default
  300 s), which unloads any model idle that long; a disabled model gets no more runs, so it goes then.
- A server process that dies is reported with its exit code and log tail, and started again on the
  same port.
- The server is published in the data folder's state file (`warm`), with the fingerprints of the models
  it serves, so every command uses it instead of starting its own; the file goes when the follower stops.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.local_process import LocalSIEServer
from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE, Catalogue, ModelSpec, fingerprint, load_catalogue
from taxo_pipeline.sie.model_yaml import server_config, sync_models_dir
from taxo_pipeline.sie.redaction import redact
from taxo_pipeline.sie.server import remote_url, served_specs
from taxo_pipeline.sie.warm import Publisher

log = logging.getLogger(__name__)

POLL_S = 2.0
# sie-server settings for the dev server (the environment overrides them): unload idle models.
DEV_ENV_DEFAULTS = {"SIE_IDLE_EVICT_S": "300"}


@contextmanager
def dev_sie(
    sie: SIESettings, data_dir: Path, catalogue: Path | None, logger: Any = None, poll_s: float = POLL_S,
    owner: str = "taxo-pipeline dev",
) -> Iterator[str]:  # fmt: skip
    """Yield SIE_BASE_URL when set, else the URL of a local server that follows the catalogue file
    (TAXO_MODELS; None: the packaged models.yaml), published for every command as `owner`'s warm server."""
    if url := remote_url(sie):
        (logger or log).info(f"using the SIE server at {redact(url)}")
        yield url
        return
    follower = CatalogueFollower(sie, data_dir, catalogue, logger=logger, poll_s=poll_s, owner=owner)
    try:
        yield follower.start()
    finally:
        follower.stop()


class CatalogueFollower:
    """A local server plus the thread that keeps its models those enabled in the catalogue file (None: the
    packaged models.yaml); its files live in <data_dir>/sie-dev and its log in <data_dir>/logs."""

    def __init__(
        self, sie: SIESettings, data_dir: Path, catalogue: Path | None, *, logger: Any = None,
        poll_s: float = POLL_S, owner: str = "taxo-pipeline dev",
    ):  # fmt: skip
        self.catalogue_path = catalogue or PACKAGED_CATALOGUE
        self.sie, self.data_dir = sie, data_dir
        self.log = logger or log
        self.poll_s = poll_s
        self.device = sie.device
        self.publisher = Publisher(owner, sie.state_file, logger=self.log)
        parent = data_dir / "sie-dev"
        parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="server-", dir=parent))
        self.server: LocalSIEServer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="sie-catalogue-follower", daemon=True)
        self._last_problem: str | None = None

    def start(self) -> str:
        catalogue = load_catalogue(self.catalogue_path)
        specs = served_specs(catalogue)
        self.sync(catalogue)
        # No HF_HUB_OFFLINE default: a model enabled later may need its weights from the hub.
        self.server = LocalSIEServer(
            specs, self.sie, self.data_dir, logger=self.log, models_dir=self.root / "models",
            env_defaults=DEV_ENV_DEFAULTS, offline_if_local=False,
        )  # fmt: skip
        self.server.start()
        self.publish(catalogue)
        self._thread.start()
        return self.server.base_url

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()  # before withdrawing: the follower would publish again
        self.publisher.withdraw()  # before the server stops: no command picks up a server that is stopping
        if self.server:
            self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def sync(self, catalogue: Catalogue) -> dict[str, list[str]]:
        """Write the enabled models' files; returns the slugs added, changed and removed."""
        configs = {
            spec.slug: server_config(spec, self.device, self._weights_link(spec)) for spec in catalogue.enabled()
        }
        changes = sync_models_dir(self.root / "models", configs)
        for kind, slugs in changes.items():
            if slugs:
                self.log.info(f"dev SIE server: models {kind}: {', '.join(slugs)} (from {self.catalogue_path})")
        return changes

    def step(self) -> None:
        """One round: follow the catalogue, start the server again if it died (or failed to restart), and
        publish what it serves now (or, while another owner's server is published, try again)."""
        catalogue = load_catalogue(self.catalogue_path)
        changed = any(self.sync(catalogue).values())
        restarted = self.server.pid is None or self.server.exited()
        if restarted:
            specs = served_specs(catalogue)
            if self.server.pid is not None:
                self.log.error(f"{self.server.exit_report()}\nstarting it again on the same port")
                self.server.stop()
            self.server.specs = specs
            self.server.start()
        if changed or restarted or not self.publisher.published:
            self.publish(catalogue)

    def publish(self, catalogue: Catalogue) -> None:
        served = {spec.id: fingerprint(spec) for spec in catalogue.enabled()}
        self.publisher.publish(self.server.base_url, self.server.pid, catalogue.path, self.device, served)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.step()
                self._last_problem = None
            except Exception as exc:  # a half-saved catalogue must not stop the follower: report, retry
                if str(exc) != self._last_problem:
                    self.log.warning(f"dev SIE server: not following the catalogue: {exc}")
                self._last_problem = str(exc)

    def _weights_link(self, spec: ModelSpec) -> Path | None:
        weights = spec.resolve_weights()
        if weights is None:
            return None
        link = self.root / "weights" / f"{spec.slug}-{fingerprint(spec)[:16]}"
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(weights, target_is_directory=True)
        return link
