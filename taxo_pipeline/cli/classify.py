"""`classify-products`: classify an unlabelled catalogue with an evaluated approach (by default the
leaderboard's best), shard by shard, with a calibrated confidence per product. Shard files land under
data/classifications/ and the warehouse view `classifications` reads them; --output also writes
every row to one Parquet, CSV or JSON Lines file."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.classification.classifier import catalogue_classifier
from taxo_pipeline.classification.coverage import TARGETS, held_out
from taxo_pipeline.classification.review import refresh_review_queue, run_summary
from taxo_pipeline.classification.run import (
    CatalogueRun,
    Choices,
    Progress,
    classify_catalogue,
    confidence_summary,
    plan_shards,
    prepare_run,
    publish_run,
)
from taxo_pipeline.classification.shards import check_output, export, refresh_view, shard_files, shard_key
from taxo_pipeline.cli.arguments import model_id, positive_int
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.resources import StorageResource
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", required=True, type=Path, help="catalogue: .parquet, .jsonl or .csv")
    parser.add_argument("--approach", help="approach name (default: the leaderboard's best)")
    parser.add_argument("--model", type=model_id, help="model id (default: the best evaluated for the approach)")
    parser.add_argument("--variant", help="category documents: full-path, leaf, both (default: the best evaluated)")
    parser.add_argument("--output", type=Path, help="also write every row to F.parquet, F.csv or F.jsonl")
    parser.add_argument("--top-k", type=positive_int, default=5, help="candidates per product (default 5)")
    parser.add_argument("--shard-size", type=positive_int, default=settings.current().shard_size,
                        help="products per shard (default: $TAXO_SHARD_SIZE, else 10000)")  # fmt: skip
    parser.add_argument("--chunk-size", type=positive_int, default=settings.current().classify_chunk,
                        help="products classified at once (default: $TAXO_CLASSIFY_CHUNK, else 2048)")  # fmt: skip
    parser.add_argument("--part", type=_part, default=(0, 1),
                        help="I/N: classify only shards whose index %% N == I, for concurrent runs (default 0/1)")  # fmt: skip
    parser.add_argument("--dagster", action="store_true",
                        help="register the shards as `catalogue_shard` partitions and run each new or changed shard "
                             "as a Dagster run of catalogue_classifications in the instance (DAGSTER_HOME)")  # fmt: skip
    parser.add_argument("--target-precision", type=_precision, metavar="P",
                        help="mark needs_review on the products below the confidence threshold whose held-out "
                             "labelled products reach precision P, observed and in mean confidence (0 < P <= 1); "
                             "view `review_queue`")  # fmt: skip
    return parser


def _precision(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a precision in (0, 1], e.g. 0.9, got {text!r}")
    return value


def run_classify(args: argparse.Namespace) -> int:
    """Output, approach and the whole catalogue are checked before the SIE server starts or anything is
    written; the server starts only if a shard needs classifying."""
    store = StorageResource()
    warehouse, data_dir = store.warehouse(), store.data_path("")
    if args.output:
        check_output(args.output)
    choices = Choices(args.approach, args.model, args.variant, args.top_k, args.shard_size, args.chunk_size, *args.part,
                      target_precision=args.target_precision)  # fmt: skip
    run = prepare_run(warehouse, data_dir, args.products, choices)
    print(confidence_summary(run.calibration), file=sys.stderr)
    started, models = time.perf_counter(), [m for m in (run.key.model, run.key.reranker) if m]
    progress, pending = plan_shards(run)
    if args.dagster:
        _through_dagster(run, models, progress, pending)
    elif pending:
        with ensure_sie(models=models, logger=log) as url:
            with InferenceClient(url, cache=EmbeddingCache(warehouse, read_only=True), logger=log) as client:
                classify_catalogue(run, progress, pending, catalogue_classifier(run, store, client))
    if snapshot := publish_run(run, progress.fingerprints):
        refresh_view(warehouse, data_dir)
        refresh_review_queue(warehouse)
    _report(run, progress, time.perf_counter() - started, args.output, snapshot)
    targets = TARGETS if run.target_precision is None else (run.target_precision,)
    print(*run_summary(*held_out(warehouse, run.key), shard_files(run.directory), targets), sep="\n")
    return 0


def _through_dagster(run: CatalogueRun, models: list[str], progress: Progress, pending: list[int]) -> None:
    """One in-process Dagster run of catalogue_classifications per new or changed shard of this part, in the
    instance the UI shows; the SIE server is started only if a shard needs classifying."""
    from taxo_pipeline.cli.runs import command_instance, materialize
    from taxo_pipeline.defs.classify.assets import run_config
    from taxo_pipeline.defs.classify.partitions import register_shards

    register_shards(command_instance(), progress.shards)
    if not pending:
        return
    with ensure_sie(models=models, logger=log) as url:
        for index in pending:
            materialize(["catalogue_classifications"], sie_url=url, partition_key=shard_key(index),
                        ops_config=run_config(run)["ops"])  # fmt: skip
            progress.classified.append(index)
            progress.classified_products += min(run.shard_size, progress.products - index * run.shard_size)


def _report(run: CatalogueRun, progress: Progress, seconds: float, output: Path | None, snapshot: Path | None) -> None:
    print(f"{progress.products} products in {progress.shards} shards; this run classified "
          f"{progress.classified_products} products in shards {progress.classified or 'none'}, kept shards "
          f"{progress.kept or 'none'}, in {seconds:.1f}s -> {run.directory}")  # fmt: skip
    if output is None:
        return
    if snapshot is None:
        print(f"{output} not written: some shards of the catalogue are not classified yet (other parts)")
        return
    print(f"{export(shard_files(snapshot), output)} rows -> {output}")


def classify_products(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, lambda a: run_classify(build_parser().parse_args(a)), argv)


if __name__ == "__main__":
    sys.exit(classify_products())
