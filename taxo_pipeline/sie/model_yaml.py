"""The model YAML files sie-server reads from its --models-dir, written from the catalogue."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from taxo_pipeline.sie.model_catalogue import ModelSpec


def server_config(spec: ModelSpec, device: str = "cpu", weights_path: Path | None = None) -> dict[str, Any]:
    """The model YAML sie-server reads: the catalogue's `server:` with local weights and CPU precision.

    `weights_path` replaces the resolved weights directory (the dev server passes a link whose name
    carries the fingerprint, so changed weights change the config and sie-server reloads them).
    """
    config = {"sie_id": spec.id, **copy.deepcopy(dict(spec.server))}
    weights = spec.resolve_weights()
    if weights:
        # With hf_id present the server's cache layer still tries the hub.
        config.pop("hf_id", None)
        config.pop("hf_revision", None)
        config["weights_path"] = str(weights_path or weights)
    if device == "cpu":
        # Shipped configs ask for float16/bfloat16, which CPU kernels do not serve well.
        for profile in config.get("profiles", {}).values():
            if "compute_precision" in profile:
                profile["compute_precision"] = None
    return config


def write_models_dir(specs: Sequence[ModelSpec], device: str, root: Path) -> Path:
    """One YAML per model in a folder of `root` (<data_dir>/sie-models) named by the content, so concurrent
    servers never clash."""
    configs = {spec.slug: server_config(spec, device) for spec in specs}
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / digest
    folder.mkdir(parents=True, exist_ok=True)
    for slug, config in configs.items():
        _write(folder, slug, config)
    return folder


def sync_models_dir(folder: Path, configs: Mapping[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Make `folder` hold exactly `configs` ({slug: config}) for a running server's hot reload:
    new and changed files appear by rename (sie-server sees each as added), files of models no
    longer wanted are removed. Returns the slugs added, changed and removed."""
    folder.mkdir(parents=True, exist_ok=True)
    present = {path.name.removesuffix(".yaml") for path in folder.glob("*.yaml")}
    changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    for slug, config in configs.items():
        path = folder / f"{slug}.yaml"
        if slug in present and yaml.safe_load(path.read_text()) == config:
            continue
        _write(folder, slug, config)
        changes["changed" if slug in present else "added"].append(slug)
    for slug in sorted(present - configs.keys()):
        (folder / f"{slug}.yaml").unlink(missing_ok=True)
        changes["removed"].append(slug)
    return changes


def _write(folder: Path, slug: str, config: dict[str, Any]) -> None:
    # Written aside, then renamed: readers never see half a file, and the temp name is no *.yaml.
    tmp = folder / f".{slug}.yaml.{os.getpid()}"
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, folder / f"{slug}.yaml")
