"""Which SIE server a command uses: `base_url`, else SIE_BASE_URL, else the warm server `taxo-pipeline
dev` or `serve` publish, else a local one started for it.

`ensure_sie()` is the one entry point (`lazy_sie()` defers it to the first request that needs a server); the local process itself lives in `local_process`, its model
files in `model_yaml`, the server `taxo-pipeline dev` shares in `dev_server`, and how it is published
and found in `warm`. Each takes the caller's `SIESettings`, data folder and catalogue (the workspace's):
none reads the environment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from taxo_pipeline.errors import InputError
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.local_process import LocalSIEServer
from taxo_pipeline.sie.model_catalogue import Catalogue, ModelSpec, load_catalogue
from taxo_pipeline.sie.redaction import redact
from taxo_pipeline.sie.warm import find_warm_server

log = logging.getLogger(__name__)


def remote_url(sie: SIESettings, base_url: str | None = None) -> str | None:
    """`base_url`, else SIE_BASE_URL (`sie.base_url`), without a trailing slash; None when a local server is wanted."""
    return base_url.rstrip("/") if base_url else sie.base_url


@contextmanager
def ensure_sie(
    sie: SIESettings,
    data_dir: Path,
    catalogue: Catalogue | Path | None,
    models: Sequence[str] | None = None,
    *,
    base_url: str | None = None,
    logger: Any = None,
) -> Iterator[str]:
    """Yield the URL of an SIE server: `base_url`, else SIE_BASE_URL, else the warm server of `taxo-pipeline
    dev`/`serve` when it serves these models, else a local one started here.

    The server serves `models` (ids, which must be enabled in the catalogue) or every enabled model of
    `catalogue`: a Catalogue, or the file to load once a local server is wanted (TAXO_MODELS; None: the
    packaged models.yaml). A local server started here keeps its log and model files in `data_dir`, and
    is stopped when the block exits, however it exits.
    """
    if url := remote_url(sie, base_url):
        (logger or log).info(f"using the SIE server at {redact(url)}")
        yield url
        return
    specs = served_specs(_loaded(catalogue), models)
    if warm := find_warm_server(specs, sie, logger):
        (logger or log).info(f"using {warm.describe()}")
        yield warm.url
        return
    with LocalSIEServer(specs, sie, data_dir, logger=logger) as server:
        yield server.base_url


def _loaded(catalogue: Catalogue | Path | None) -> Catalogue:
    return catalogue if isinstance(catalogue, Catalogue) else load_catalogue(catalogue)


class LazySIE:
    """Call it for the URL `ensure_sie()` gives, entered at the first call (which starts a local server if
    one is needed) and left with the `lazy_sie()` block. Pass it as an InferenceClient's `base_url`."""

    def __init__(self, stack: ExitStack, **ensure_args: Any):
        self._stack, self._args = stack, ensure_args
        self._url: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._url is None:
                self._url = self._stack.enter_context(ensure_sie(**self._args))
            return self._url

    @property
    def started(self) -> bool:
        """Whether a call found (or started) the server."""
        return self._url is not None


@contextmanager
def lazy_sie(
    sie: SIESettings,
    data_dir: Path,
    catalogue: Catalogue | Path | None,
    models: Sequence[str] | None = None,
    *,
    base_url: str | None = None,
    logger: Any = None,
) -> Iterator[LazySIE]:
    """`ensure_sie()` when something first needs the server: a command whose inputs are all in the embedding
    cache starts none. The models are checked against the catalogue here, as ensure_sie() would."""
    if not remote_url(sie, base_url):
        catalogue = _loaded(catalogue)
        served_specs(catalogue, models)  # a model not enabled fails now, not at its first uncached input
    with ExitStack() as stack:
        yield LazySIE(stack, sie=sie, data_dir=data_dir, catalogue=catalogue, models=models, base_url=base_url,
                      logger=logger)  # fmt: skip


def served_specs(catalogue: Catalogue, models: Sequence[str] | None = None) -> list[ModelSpec]:
    """The catalogue entries a local server loads: `models` (each must be enabled), else every enabled one."""
    enabled = {spec.id: spec for spec in catalogue.enabled()}
    if models is not None:
        untrained = [spec.id for spec in catalogue.to_train() if spec.id in models and not spec.ready]
        if untrained:
            raise InputError(
                f"fine-tuned model(s) {', '.join(map(repr, untrained))} of {catalogue.path} are not trained yet (no "
                "weights at their `weights: path`): run `taxo-pipeline materialize`, which trains them first"
            )
        if disabled := [m for m in models if m not in enabled]:
            raise InputError(
                f"model(s) {', '.join(map(repr, disabled))} not enabled in {catalogue.path}: "
                "add them or set `enabled: true` to serve them locally, or set SIE_BASE_URL"
            )
        return [enabled[m] for m in dict.fromkeys(models)]
    if not enabled:
        raise InputError(f"no model is enabled in {catalogue.path}: set `enabled: true` on one, or set SIE_BASE_URL")
    return list(enabled.values())
