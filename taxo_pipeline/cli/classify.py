"""`classify-products`: classify an unlabelled catalogue with an evaluated approach (by default the
leaderboard's best), shard by shard, with a calibrated confidence per product. Shard files land under
data/classifications/ and the warehouse view `classifications` reads them; --output also writes
every row to one Parquet, CSV or JSON Lines file."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl

from taxo_pipeline.approaches.evidence import Evidence
from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.spec import ClassifyRequest
from taxo_pipeline.classification.evaluated import choose, load_calibration
from taxo_pipeline.classification.run import CatalogueRun, Progress, classify_catalogue, confidence_summary
from taxo_pipeline.classification.shards import export, refresh_view, shard_files
from taxo_pipeline.cli.arguments import positive_int
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.defs.ingest.assets import load_experiment, load_taxonomy_full_depth, load_taxonomy_l3
from taxo_pipeline.errors import InputError
from taxo_pipeline.files import file_sha256
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.catalogue import load_catalogue, validate_model_id
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.server import ensure_sie

log = logging.getLogger("taxo_pipeline")
PROG = "classify-products"


def _part(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, e.g. 0/4, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _env_size(name: str, default: int) -> int:
    value = os.environ.get(name) or str(default)
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"{name}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", required=True, type=Path, help="catalogue: .parquet, .jsonl or .csv")
    parser.add_argument("--approach", help="approach name (default: the leaderboard's best)")
    parser.add_argument("--model", type=validate_model_id, help="model id (default: the best evaluated for the approach)")
    parser.add_argument("--variant", help="category documents: full-path, leaf, both (default: the best evaluated)")
    parser.add_argument("--output", type=Path, help="also write every row to F.parquet, F.csv or F.jsonl")
    parser.add_argument("--top-k", type=positive_int, default=5, help="candidates per product (default 5)")
    parser.add_argument("--shard-size", type=positive_int, default=_env_size("TAXO_SHARD_SIZE", 10_000),
                        help="products per shard (default: $TAXO_SHARD_SIZE, else 10000)")  # fmt: skip
    parser.add_argument("--chunk-size", type=positive_int, default=_env_size("TAXO_CLASSIFY_CHUNK", 2_048),
                        help="products classified at once (default: $TAXO_CLASSIFY_CHUNK, else 2048)")  # fmt: skip
    parser.add_argument("--part", type=_part, default=(0, 1),
                        help="I/N: classify only shards whose index %% N == I, for concurrent runs (default 0/1)")  # fmt: skip
    return parser


def _catalogue_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "catalogue"


def _classifier(approach, request: ClassifyRequest):
    def classify(chunk: pl.DataFrame):
        return approach.classify(replace(request, products=chunk))

    return classify


def run_classify(args: argparse.Namespace) -> int:
    store = StorageResource()
    warehouse, data_dir = store.warehouse(), store.data_path("")
    if args.output and args.output.suffix.lower() not in (".parquet", ".csv", ".jsonl"):
        raise InputError(f"--output {args.output}: unsupported extension {args.output.suffix!r} (use .parquet, .csv or .jsonl)")
    catalogue = load_catalogue()
    enabled = [spec.id for spec in catalogue.enabled()]
    choice = choose(warehouse, enabled, args.approach, args.model, args.variant)
    approach, key = approach_named(choice.key.approach), choice.key
    log.info("classifying with %s (strict hF1 %.3f on the evaluation set)", key, choice.strict_f1)
    calibration = load_calibration(warehouse, key)
    print(confidence_summary(calibration), file=sys.stderr)
    run = CatalogueRun(
        args.products, _catalogue_name(args.products), file_sha256(args.products)[:16], key, calibration, data_dir,
        args.top_k, args.shard_size, args.chunk_size, *args.part,
    )  # fmt: skip
    taxonomy = load_taxonomy_l3(store)
    family = {spec.id: spec.family for spec in catalogue}.get(key.model, "text")
    started = time.perf_counter()
    with ensure_sie(models=[m for m in (key.model, key.reranker) if m], logger=log) as url:
        with InferenceClient(url, cache=EmbeddingCache(warehouse), logger=log) as client:
            request = ClassifyRequest(
                pl.DataFrame(), taxonomy, Evidence(client, store.index_path(), taxonomy, load_taxonomy_full_depth(store, key.variant)), key.model, key.variant,
                family, key.reranker, args.top_k, approach.batch_size,
                labelled=load_experiment(store) if approach.needs_labels else None,
            )  # fmt: skip
            progress = classify_catalogue(run, _classifier(approach, request))
    _report(run, progress, time.perf_counter() - started, args.output)
    if shard_files(run.directory):  # the view's glob must match a file (a --part run may have had no shard)
        refresh_view(warehouse, data_dir)
    return 0


def _report(run: CatalogueRun, progress: Progress, seconds: float, output: Path | None) -> None:
    files = shard_files(run.directory)
    print(f"{progress.products} products in {progress.shards} shards; this run classified "
          f"{progress.classified_products} products in shards {progress.classified or 'none'}, kept shards "
          f"{progress.kept or 'none'}, in {seconds:.1f}s -> {run.directory}")  # fmt: skip
    if output is None:
        return
    if len(files) < progress.shards:
        print(f"{output} not written: {progress.shards - len(files)} shards are not classified yet (other parts)")
        return
    print(f"{export(files, output)} rows -> {output}")


def classify_products(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, lambda a: run_classify(build_parser().parse_args(a)), argv)


if __name__ == "__main__":
    sys.exit(classify_products())
