"""The server `taxo-pipeline dev` shares follows the catalogue, through a real sie-server process."""

import copy
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable

import numpy as np
import pytest

from taxo_pipeline.sie.client import InferenceClient, ModelNotServedError, SIEUnavailableError
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.dev_server import CatalogueFollower
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.sie.sie_testkit import NLI_LABELS, TINY_CLIP, TINY_NLI, build_tiny_models, write_catalogue

BOUND_S = 60  # every change must show well before the sensor (every 60 s) launches runs


def within[T](bound_s: float, attempt: Callable[[], T], *retry_on: type[Exception]) -> T:
    """attempt() until it returns a value, retrying on `retry_on` for at most `bound_s` seconds."""
    deadline = time.monotonic() + bound_s
    while True:
        try:
            return attempt()
        except retry_on:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def following() -> CatalogueFollower:
    """A follower of the workspace's catalogue (TAXO_MODELS), as `dev` starts it."""
    workspace = Workspace.from_env()
    return CatalogueFollower(workspace.sie, workspace.data_dir, workspace.settings.models, poll_s=0.5)


def served(follower: CatalogueFollower) -> dict[str, bool]:
    return {m["name"]: m["loaded"] for m in follower.server.served_models()}


@pytest.fixture
def catalogue(tiny_catalogue_entries, tiny_models_dir, tmp_path, monkeypatch):
    """A catalogue file with tiny/clip (weights in a copy the test may change) and tiny/nli, disabled."""
    clip = copy.deepcopy(tiny_catalogue_entries[TINY_CLIP])
    clip["weights"] = {"path": str(shutil.copytree(tiny_models_dir / "clip", tmp_path / "clip-weights"))}
    entries = {TINY_CLIP: clip, TINY_NLI: {**copy.deepcopy(tiny_catalogue_entries[TINY_NLI]), "enabled": False}}
    path = tmp_path / "models.yaml"
    monkeypatch.setenv("TAXO_MODELS", str(path))
    monkeypatch.delenv("SIE_BASE_URL", raising=False)
    monkeypatch.setenv("SIE_IDLE_EVICT_S", "10")  # sie-server's minimum, so the test sees a disabled model go

    def write(**enabled: bool) -> None:
        for model_id, on in enabled.items():
            entries[model_id]["enabled"] = on
        write_catalogue(path, list(entries.values()))

    write()
    return write, tmp_path / "clip-weights"


def test_changed_weights_are_reloaded_enabled_models_served_and_disabled_ones_unloaded(catalogue, tmp_path, caplog):
    write, clip_weights = catalogue
    build_tiny_models(tmp_path / "retrained", seed=1)  # the same models with other weights
    caplog.set_level(logging.INFO)
    follower = following()
    try:
        client = InferenceClient(follower.start(), SIESettings())
        before = client.encode(TINY_CLIP, ["a straw hat"])

        shutil.copytree(tmp_path / "retrained" / "clip", clip_weights, dirs_exist_ok=True)
        within(BOUND_S, lambda: logged(caplog, "dev SIE server: models changed: tiny__clip"), AssertionError)
        after = client.encode(TINY_CLIP, ["a straw hat"])  # within seconds of `before`: not an idle reload
        assert not np.allclose(after, before, atol=1e-4)

        with pytest.raises(ModelNotServedError):
            client.extract(TINY_NLI, ["a straw hat"], NLI_LABELS)
        write(**{TINY_NLI: True})  # enabled while the server runs
        results = within(BOUND_S, lambda: client.extract(TINY_NLI, ["a straw hat"], NLI_LABELS), ModelNotServedError)
        assert sorted(c["label"] for c in results[0]) == sorted(NLI_LABELS)
        assert "dev SIE server: models added: tiny__nli" in caplog.text

        write(**{TINY_NLI: False})
        within(BOUND_S, lambda: logged(caplog, "dev SIE server: models removed: tiny__nli"), AssertionError)
        assert not (follower.root / "models" / "tiny__nli.yaml").exists()

        def nli_unloaded() -> None:
            assert served(follower).get(TINY_NLI) is False, f"still loaded: {served(follower)}"

        within(BOUND_S, nli_unloaded, AssertionError)  # idle for SIE_IDLE_EVICT_S
    finally:
        follower.stop()
    assert not follower.root.exists()


def logged(caplog: pytest.LogCaptureFixture, line: str) -> None:
    assert line in caplog.text, f"not logged yet: {line}"


def test_a_dev_server_that_dies_is_reported_and_started_again_on_its_port(catalogue, caplog):
    caplog.set_level(logging.INFO)
    follower = following()
    try:
        url = follower.start()
        os.kill(follower.server.pid, signal.SIGKILL)
        client = InferenceClient(url, SIESettings())
        vector = within(BOUND_S, lambda: client.encode(TINY_CLIP, ["a straw hat"]), SIEUnavailableError)
        assert vector.shape == (1, 16) and follower.server.base_url == url
        assert f"the local SIE server on {url} exited with code -9 (killed by SIGKILL)" in caplog.text
        assert "starting it again on the same port" in caplog.text
    finally:
        follower.stop()
