"""Classify a catalogue shard by shard: each shard not already written with the same rows and settings
is classified in chunks (one products x categories score matrix per chunk, never per catalogue),
its rows get a calibrated confidence, and its file is written atomically. A killed run loses only
the shard it was on; `part`/`parts` splits the shards between concurrent runs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from taxo_pipeline.approaches.spec import Classified
from taxo_pipeline.classification.calibration import Calibration, features
from taxo_pipeline.classification.catalogue import Shard, read_shards
from taxo_pipeline.classification.shards import (
    ShardRows,
    is_done,
    remove_beyond,
    restamp,
    run_directory,
    shard_path,
    shard_table,
    write_shard,
)
from taxo_pipeline.evaluation.keys import ResultKey

log = logging.getLogger(__name__)

Classify = Callable[[pl.DataFrame], Classified]


@dataclass(frozen=True)
class CatalogueRun:
    products: Path
    catalogue: str  # the directory name of the catalogue's results
    catalogue_fingerprint: str
    key: ResultKey
    calibration: Calibration
    data_dir: Path
    top_k: int = 5
    shard_size: int = 10_000
    chunk_size: int = 2_048
    part: int = 0  # this run classifies the shards whose index % parts == part
    parts: int = 1

    @property
    def directory(self) -> Path:
        return run_directory(self.data_dir, self.catalogue, self.key)

    @property
    def fingerprint(self) -> str:
        """Settings that change a shard's rows besides the rows themselves."""
        settings = {"key": self.key.columns, "top_k": self.top_k, "calibration": self.calibration.to_dict()}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Progress:
    shards: int = 0  # in the catalogue
    products: int = 0
    classified: list[int] = field(default_factory=list)  # shard indices classified by this run
    kept: list[int] = field(default_factory=list)  # already written, unchanged
    classified_products: int = 0


def classify_shard(shard: Shard, run: CatalogueRun, classify: Classify) -> ShardRows:
    ids: list[str] = []
    ranked: list[list[tuple[str, float]]] = []
    skipped: list[str | None] = []
    for start in range(0, shard.products.height, run.chunk_size):
        chunk = shard.products.slice(start, run.chunk_size)
        result = classify(chunk)
        by_id = dict(zip(result.product_ids, result.ranked, strict=True))
        for product_id in chunk["product_id"].to_list():
            ids.append(product_id)
            ranked.append(list(by_id.get(product_id, []))[: run.top_k])
            skipped.append(None if product_id in by_id else result.skipped.get(product_id, "not classified"))
    top1, margin = features(ranked)
    return ShardRows(ids, ranked, run.calibration.confidence(top1, margin), skipped)


def classify_catalogue(run: CatalogueRun, classify: Classify) -> Progress:
    progress = Progress()
    for shard in read_shards(run.products, run.shard_size):
        progress.shards, progress.products = shard.index + 1, progress.products + shard.products.height
        if shard.index % run.parts != run.part:
            continue
        path, fingerprint = shard_path(run.directory, shard.index), shard.fingerprint
        if is_done(path, fingerprint, run.fingerprint):
            restamp(path, run.catalogue_fingerprint)
            progress.kept.append(shard.index)
            continue
        rows = classify_shard(shard, run, classify)
        table = shard_table(run.key, run.catalogue, run.catalogue_fingerprint, shard.index, rows)
        write_shard(path, table, fingerprint, run.fingerprint)
        progress.classified.append(shard.index)
        progress.classified_products += shard.products.height
        log.info("shard %d: %d products classified -> %s", shard.index, shard.products.height, path)
    if stale := remove_beyond(run.directory, progress.shards):
        log.info("removed %d shard files beyond the catalogue's %d shards", len(stale), progress.shards)
    return progress


def confidence_summary(calibration: Calibration) -> str:
    lines = [f"calibration: {calibration.products} labelled products, top-1 accuracy {calibration.accuracy:.3f}",
             "held-out reliability: bin, products, predicted, observed"]  # fmt: skip
    lines += [f"  {b['low']:.1f}-{b['high']:.1f}\t{b['products']}\t{b['predicted']:.3f}\t{b['observed']:.3f}"
              for b in calibration.reliability]  # fmt: skip
    return "\n".join(lines)
