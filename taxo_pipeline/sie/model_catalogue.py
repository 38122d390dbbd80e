"""The model catalogue: which SIE models taxo-pipeline knows, and which are enabled.

`taxo_pipeline/models.yaml` is the one file people edit. Each entry names a model, its family
(which SIE call evaluates it), its size, whether it is enabled, where local weights come from
(optional) and `server:`, the model's SIE server config as sie-server ships it. That config is
only used to start the local server; a remote server (SIE_BASE_URL) brings its own.

An entry with a `train:` block is an encoder taxo-pipeline fine-tunes from another entry, its `base`
(the `fine_tuned_encoder` asset trains it). Its `weights: {path: DIR}` is where the trained weights are
linked, and its `server:` is the base's unless given. It counts as enabled (partitions, serving,
evaluation) only once it is trained: until then only its training runs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taxo_pipeline.errors import InputError
from taxo_pipeline.files import file_sha256
from taxo_pipeline.training.encoder import TrainingSettings

PACKAGED_CATALOGUE = Path(__file__).resolve().parent.parent / "models.yaml"
FAMILIES = ("nli", "text", "image", "rerank")
# The SIE task each family is evaluated with; the server config must declare it.
FAMILY_TASK = {"nli": "extract", "text": "encode", "image": "encode", "rerank": "score"}

# Ids become file, Chroma collection and Dagster partition names, so only `org/name` of safe characters.
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Two slugs and a few words share one file name (eval/reranking/<retriever>-<variant>-<reranker>.json,
# plus a temp suffix) within the usual 255-byte limit.
MAX_MODEL_ID_CHARS = 100
SLUG_SEPARATOR = "__"
_ENTRY_KEYS = {"id", "family", "size", "enabled", "weights", "server", "train"}
_REQUIRED_KEYS = {"id", "family", "size", "enabled"}
_TRAIN_KEYS = {f.name: f.default for f in dataclasses.fields(TrainingSettings) if f.name != "log_every"}


class CatalogueError(InputError):
    """The catalogue file is malformed; the message names the file and the model."""


def validate_model_id(model_id: object) -> str:
    """`model_id` if it can name a file, a Chroma collection and a partition; InputError otherwise."""
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        problem = (
            "expected 'org/name' made of letters, digits, '.', '_' and '-' (each part starting with a letter or digit)"
        )
    elif ".." in model_id:  # Chroma refuses it in collection names, Dagster '...' in partition keys
        problem = "it may not contain '..'"
    elif SLUG_SEPARATOR in model_id.split("/")[0]:  # keeps model_slug one-to-one
        problem = f"the organisation part may not contain {SLUG_SEPARATOR!r} (file names join org and name with it)"
    elif len(model_id) > MAX_MODEL_ID_CHARS:
        problem = f"it is {len(model_id)} characters long; at most {MAX_MODEL_ID_CHARS} fit in file names"
    else:
        return model_id
    raise InputError(f"invalid model id {model_id!r}: {problem}")


def model_slug(model_id: str) -> str:
    """A file-, collection- and partition-safe name: `org/name` -> `org__name`.

    One-to-one: an org holds no '__' and a name starts with a letter or digit, so the first '__'
    followed by one is the separator, and no two ids share a slug."""
    return validate_model_id(model_id).replace("/", SLUG_SEPARATOR)


@dataclass(frozen=True)
class TrainSpec:
    """A fine-tuned entry's `train:` block: the entry it starts from and how it is trained."""

    base: str
    settings: TrainingSettings


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    size: str
    enabled: bool
    server: Mapping[str, Any]
    # Local weights, resolved at run time: a package exposing get_model_path(), or a directory.
    weights_package: str | None = None
    weights_dir: Path | None = None
    train: TrainSpec | None = None
    source: Path = field(default=PACKAGED_CATALOGUE, compare=False)

    @property
    def ready(self) -> bool:
        """False for a fine-tuned entry not trained yet: it has no weights to serve."""
        return self.train is None or (self.weights_dir is not None and self.weights_dir.is_dir())

    @property
    def slug(self) -> str:
        return model_slug(self.id)

    @property
    def task(self) -> str:
        return FAMILY_TASK[self.family]

    @property
    def dim(self) -> int | None:
        """Dense vector size declared by the server config (encode models only)."""
        dense = (self.server.get("tasks", {}).get("encode") or {}).get("dense") or {}
        return dense.get("dim")

    def resolve_weights(self) -> Path | None:
        """The local weights directory, or None when the server fetches the weights itself."""
        if self.weights_package:
            try:
                module = importlib.import_module(self.weights_package)
            except ImportError as exc:
                raise CatalogueError(
                    f"{self.source}: model {self.id!r}: weights package {self.weights_package!r} is not installed "
                    f"({exc}); run `uv sync`"
                ) from exc
            path = Path(module.get_model_path())
        elif self.weights_dir:
            path = self.weights_dir
        else:
            return None
        if not path.is_dir():
            raise CatalogueError(f"{self.source}: model {self.id!r}: weights directory {path} does not exist")
        return path.resolve()


@dataclass(frozen=True)
class Catalogue:
    path: Path
    models: tuple[ModelSpec, ...]

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def __getitem__(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        raise KeyError(f"model {model_id!r} is not in the catalogue {self.path}")

    def enabled(self, family: str | None = None) -> list[ModelSpec]:
        if family is not None and family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}: expected one of {', '.join(FAMILIES)}")
        return [m for m in self.models if m.enabled and m.ready and (family is None or m.family == family)]

    def to_train(self) -> list[ModelSpec]:
        """The enabled fine-tuned entries, trained yet or not."""
        return [m for m in self.models if m.enabled and m.train is not None]


def load_catalogue(path: str | Path | None) -> Catalogue:
    """The catalogue in `path` (the workspace's TAXO_MODELS: another catalogue, e.g. in tests) or, for None,
    the packaged models.yaml. Required, so no caller silently reads the packaged one instead of TAXO_MODELS."""
    path = Path(path).expanduser().resolve() if path else PACKAGED_CATALOGUE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogueError(f"cannot read the model catalogue {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogueError(f"{path}: expected a top-level `models:` list")
    specs: list[ModelSpec] = []
    for index, entry in enumerate(data["models"]):
        spec = _parse_entry(path, index, entry)
        if any(s.id == spec.id for s in specs):
            raise CatalogueError(f"{path}: model {spec.id!r} is listed twice")
        specs.append(spec)
    return Catalogue(path=path, models=tuple(_with_bases(path, specs)))


def _parse_entry(path: Path, index: int, entry: object) -> ModelSpec:
    if not isinstance(entry, dict):
        raise CatalogueError(f"{path}: models[{index}] must be a mapping, got {entry!r}")
    name = entry.get("id", f"models[{index}]")

    def fail(problem: str) -> CatalogueError:
        return CatalogueError(f"{path}: model {name!r}: {problem}")

    if missing := sorted(_REQUIRED_KEYS - entry.keys()):
        raise fail(f"missing {', '.join(missing)}")
    if unknown := sorted(entry.keys() - _ENTRY_KEYS):
        raise fail(f"unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    try:
        validate_model_id(entry["id"])
    except InputError as exc:
        raise fail(str(exc)) from None
    family, server = entry["family"], entry.get("server")
    if family not in FAMILIES:
        raise fail(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    if not isinstance(entry["enabled"], bool):
        raise fail(f"enabled must be true or false, got {entry['enabled']!r}")
    train = _train_block(entry["train"], fail) if "train" in entry else None
    if server is not None or train is None:
        _check_server(server, entry["id"], family, fail)
    weights = entry.get("weights") or {}
    if not isinstance(weights, dict) or len(weights) > 1 or not weights.keys() <= {"python_package", "path"}:
        raise fail("weights must be {python_package: NAME} or {path: DIR}")
    if train is not None and (family != "text" or "path" not in weights):
        raise fail("a fine-tuned entry (train:) is a text model with weights: {path: DIR}, where its trained weights go")
    weights_dir = weights.get("path")
    return ModelSpec(
        id=entry["id"],
        family=family,
        size=str(entry["size"]),
        enabled=entry["enabled"],
        server=copy.deepcopy(server or {}),
        weights_package=weights.get("python_package"),
        # Relative weight directories are relative to the catalogue file, not the working dir; a fine-tuned
        # entry's is a link that each training re-points, so it is kept, not resolved.
        weights_dir=_weights_dir(path.parent / weights_dir, train is not None) if weights_dir else None,
        train=train,
        source=path,
    )


def _check_server(server: object, model_id: str, family: str, fail) -> None:
    if not isinstance(server, dict) or not isinstance(server.get("profiles"), dict):
        raise fail("server must be the model's SIE config with `tasks` and `profiles`")
    if server.get("sie_id", model_id) != model_id:
        raise fail(f"server.sie_id {server['sie_id']!r} differs from the id")
    if (server.get("tasks") or {}).get(FAMILY_TASK[family]) is None:
        raise fail(f"family {family} needs server.tasks.{FAMILY_TASK[family]}")


def _weights_dir(path: Path, link: bool) -> Path:
    return Path(os.path.abspath(path)) if link else path.resolve()


def _train_block(block: object, fail) -> TrainSpec:
    if not isinstance(block, dict) or not isinstance(block.get("base"), str):
        raise fail("train must be a mapping with `base`: the id of the entry it is fine-tuned from")
    if unknown := sorted(block.keys() - {"base", *_TRAIN_KEYS}):
        raise fail(f"unknown train keys {', '.join(unknown)} (allowed: base, {', '.join(_TRAIN_KEYS)})")
    values = {key: _train_value(key, value, fail) for key, value in block.items() if key != "base"}
    settings = TrainingSettings(**values)
    if settings.batch_size < 2 or settings.epochs < 1 or settings.per_source_cap < 1 or not 0 <= settings.warmup_ratio < 1:
        raise fail("train: batch_size must be at least 2 (the other pairs of a batch are the negatives), epochs and "
                   "per_source_cap at least 1, warmup_ratio in [0, 1)")  # fmt: skip
    return TrainSpec(block["base"], settings)


def _train_value(key: str, value: object, fail) -> object:
    kind = type(_TRAIN_KEYS[key])
    if kind is float and isinstance(value, str):  # YAML reads 5e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if type(value) is kind or kind is float and type(value) is int:  # `true` is no number here
        return value
    raise fail(f"train.{key} must be {kind.__name__}, got {value!r}")


def _with_bases(path: Path, specs: list[ModelSpec]) -> list[ModelSpec]:
    """Fine-tuned entries checked against their base, and given its server config unless they have one."""
    known = {spec.id: spec for spec in specs}
    for position, spec in enumerate(specs):
        if spec.train is None:
            continue
        base = known.get(spec.train.base)
        if base is None or base.family != "text" or base.train is not None or not (base.weights_package or base.weights_dir):
            raise CatalogueError(f"{path}: model {spec.id!r}: train.base {spec.train.base!r} must be a text model of "
                                 "this catalogue with local weights (`weights:`), not fine-tuned itself")  # fmt: skip
        if not spec.server:
            server = {key: value for key, value in copy.deepcopy(dict(base.server)).items() if key != "sie_id"}
            specs[position] = dataclasses.replace(spec, server=server)
    return specs


def fingerprint(spec: ModelSpec) -> str:
    """Changes when anything that can change the model's outputs changes.

    Covers the catalogue entry (not `enabled`) and, for local weights, the weights package
    version and every weight file's content. Hub weights are pinned by `server.hf_revision`.
    """
    digest = hashlib.sha256()
    # Not a fine-tuned entry's `train:` block: its weights say what it was trained with, and only once they
    # are trained again (an edited block alone would rerun its partitions with the old weights).
    entry = {"id": spec.id, "family": spec.family, "size": spec.size, "server": spec.server}
    digest.update(json.dumps(entry, sort_keys=True, default=str).encode())
    if spec.weights_package:
        try:
            digest.update(importlib.metadata.version(spec.weights_package.replace("_", "-")).encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    weights = spec.resolve_weights()
    if weights:
        for file in sorted(p for p in weights.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(weights)).encode())
            digest.update(file_sha256(file).encode())
    return digest.hexdigest()
