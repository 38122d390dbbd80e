"""Fixtures shared by every test: the offline data in ../shared/data, an isolated workspace, and
tiny real models with one local SIE server for the whole session.

Request `sie_env` to point TAXO_MODELS and SIE_BASE_URL at the session server (so SIEResource() and
the workspace's catalogue, `load_catalogue(Workspace.from_env().settings.models)`, see the test models),
or `sie_server` for its URL.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.factories import (
    GOOGLE_CATEGORIES,
    GOOGLE_MAPPING,
    SAMPLE_PRODUCTS,
    SHARED_DATA,
    TAXONOMY,
    sample_taxonomy,
)
from taxo_pipeline_tests.sie.sie_testkit import (
    MINILM,
    TINY_CLIP,
    TINY_CROSS_ENCODER,
    TINY_NLI,
    build_tiny_models,
    tiny_entry,
    write_catalogue,
)

# The slowest modules, slowest first (module times from a full run's junit report, 1,002 s in all over both
# workers: 174, 155, 107, 65, 64, 52, 43 s). xdist hands whole modules to the two workers in collection
# order (pyproject: --no-loadscope-reorder; its default puts modules with few tests last, and these have
# 2-9), so starting with the longest lets both workers finish together.
SLOWEST_MODULES = (
    "test_main_job", "test_improved_retrieval", "test_dev_daemon", "test_text_retrieval", "test_webserver",
    "test_classify_catalogue", "test_merchant_catalogue", "test_dev_server",
)  # fmt: skip


# Offline, as the README's variables: every command and run of the tests (child processes inherit them).
os.environ.setdefault("TAXO_GOOGLE_MAPPING", str(GOOGLE_MAPPING))
os.environ.setdefault("TAXO_GOOGLE_CATEGORIES", str(GOOGLE_CATEGORIES))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SAMPLE_PRODUCTS.is_file() or not TAXONOMY.is_file():
        pytest.fail(f"offline data missing: expected {SAMPLE_PRODUCTS} and {TAXONOMY} (../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def taxonomy_file(tmp_path_factory) -> Path:
    """The sample's cut of the real taxonomy (factories.sample_taxonomy): every model run on it costs a
    tenth of the full taxonomy's."""
    return sample_taxonomy(tmp_path_factory.mktemp("taxonomy") / "categories.txt")


@pytest.fixture
def workspace(tmp_path, monkeypatch, taxonomy_file) -> Path:
    """A fresh data dir and warehouse, with the sources pointed at the offline sample and its taxonomy."""
    monkeypatch.setenv("TAXO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAXO_WAREHOUSE", str(tmp_path / "warehouse" / "taxo.duckdb"))
    monkeypatch.setenv("TAXO_PRODUCTS", str(SAMPLE_PRODUCTS))
    monkeypatch.setenv("TAXO_TAXONOMY", str(taxonomy_file))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """Folders clip/, cross-encoder/ and nli/ with tiny random-init models (save_pretrained)."""
    root = tmp_path_factory.mktemp("tiny-models")
    build_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def tiny_catalogue_entries(tiny_models_dir) -> dict[str, dict]:
    """Catalogue entries for MiniLM (real weights, from the packaged catalogue) and the tiny models."""
    minilm = next(
        {**spec_entry, "enabled": True}
        for spec_entry in yaml.safe_load(PACKAGED_CATALOGUE.read_text())["models"]
        if spec_entry["id"] == MINILM
    )
    return {
        MINILM: minilm,
        TINY_CLIP: tiny_entry(
            TINY_CLIP, "image", tiny_models_dir / "clip", {"encode": {"dense": {"dim": 16}}},
            "sie_server.adapters.clip:CLIPAdapter", {"normalize": True},
        ),
        TINY_CROSS_ENCODER: tiny_entry(
            TINY_CROSS_ENCODER, "rerank", tiny_models_dir / "cross-encoder", {"score": {}},
            "sie_server.adapters.bert_flash_cross_encoder:BertFlashCrossEncoderAdapter",
        ),
        TINY_NLI: tiny_entry(
            TINY_NLI, "nli", tiny_models_dir / "nli", {"extract": {}},
            "sie_server.adapters.nli_classification:NLIClassificationAdapter",
            {"hypothesis_template": "This text is about {}.", "multi_label": False},
        ),
    }  # fmt: skip


@pytest.fixture(scope="session")
def test_catalogue(tiny_catalogue_entries, tmp_path_factory) -> Path:
    """A catalogue file with MiniLM, tiny/clip, tiny/cross-encoder and tiny/nli, all enabled."""
    return write_catalogue(tmp_path_factory.mktemp("catalogue") / "models.yaml", list(tiny_catalogue_entries.values()))


@pytest.fixture(scope="session")
def sie_server(test_catalogue, tmp_path_factory) -> Iterator[str]:
    """Base URL of one local SIE server serving the test catalogue, started by ensure_sie()."""
    with contextlib.ExitStack() as stack:
        # The environment only matters while the server starts; tests set their own afterwards.
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TAXO_MODELS", str(test_catalogue))
            env.setenv("TAXO_DATA_DIR", str(tmp_path_factory.mktemp("sie-data")))
            env.delenv("SIE_BASE_URL", raising=False)
            env.delenv("SIE_API_KEY", raising=False)
            started = Workspace.from_env()
            url = stack.enter_context(ensure_sie(started.sie, started.data_dir, started.settings.models))
        yield url


@pytest.fixture
def sie_env(sie_server, test_catalogue, monkeypatch) -> str:
    """TAXO_MODELS = the test catalogue and SIE_BASE_URL = the session server, for this test."""
    monkeypatch.setenv("TAXO_MODELS", str(test_catalogue))
    monkeypatch.setenv("SIE_BASE_URL", sie_server)
    monkeypatch.delenv("SIE_API_KEY", raising=False)
    return sie_server
