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
from taxo_pipeline.classification.catalogue_labels import MIN_LABELLED, refresh_learning_view
from taxo_pipeline.classification.classifier import cached_learning, catalogue_classifier, learned_run
from taxo_pipeline.classification.coverage import TARGETS, held_out
from taxo_pipeline.classification.product_catalogue import is_export
from taxo_pipeline.classification.review import accepted_categories, run_summary
from taxo_pipeline.classification.run import (
    CatalogueRun,
    Choices,
    Progress,
    classify_catalogue,
    labels_summary,
    plan_shards,
    prepare_run,
    publish_run,
)
from taxo_pipeline.classification.shards import (
    check_output,
    classifications_root,
    export,
    refresh_view,
    shard_files,
    shard_key,
)
from taxo_pipeline.classification.shopify_import import write_shopify_import
from taxo_pipeline.cli.arguments import model_id, positive_int
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.errors import InputError
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.warehouse.classifications import refresh_review_queue
from taxo_pipeline.workspace import Workspace

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
                             "labelled products reach precision P, observed and in mean confidence (0 < P <= 1): "
                             "the catalogue's own labelled products (k-fold), else every product; view "
                             "`review_queue`")  # fmt: skip
    parser.add_argument("--trust-evaluation", action="store_true",
                        help=f"with fewer than {MIN_LABELLED} labelled products in the catalogue, accept products by "
                             "the evaluation's threshold instead of sending every one to review (for catalogues "
                             "like the evaluation's products; on merchant catalogues it over-promises, "
                             "bench/merchant.py)")  # fmt: skip
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
    written; the server starts only if a shard needs classifying or the catalogue's labels need learning."""
    workspace = Workspace.from_env()
    warehouse, data_dir = workspace.warehouse, workspace.data_dir
    shopify_import = args.output is not None and args.output.suffix.lower() == ".csv" and is_export(args.products)
    if args.output:
        check_output(args.output)
    if shopify_import and args.target_precision is None:
        raise InputError(f"--output {args.output}: for a Shopify export a .csv output is the file Shopify's product "
                         "import takes, which holds only the products accepted at --target-precision: give one "
                         "(e.g. --target-precision 0.9), or write .parquet or .jsonl for every row")  # fmt: skip
    choices = Choices(args.approach, args.model, args.variant, args.top_k, args.shard_size, args.chunk_size, *args.part,
                      target_precision=args.target_precision, trust_evaluation=args.trust_evaluation)  # fmt: skip
    run = cached_learning(prepare_run(workspace, args.products, choices))
    started, models = time.perf_counter(), [m for m in (run.key.model, run.key.reranker) if m]
    progress, pending = plan_shards(run)
    if args.dagster:
        _through_dagster(workspace, run, models, progress, pending)
        run = cached_learning(run)
    elif pending or (run.learns and run.voters is None):
        catalogue = load_catalogue(workspace.settings.models)
        with ensure_sie(workspace.sie, data_dir, catalogue, models, logger=log) as url:
            cache = EmbeddingCache(warehouse, catalogue, read_only=True)
            with InferenceClient(url, workspace.sie, cache=cache, logger=log) as client:
                run = learned_run(run, workspace, client)
                if pending:
                    classify_catalogue(run, progress, pending, catalogue_classifier(run, workspace, client))
    print(*labels_summary(run), sep="\n", file=sys.stderr)
    if snapshot := publish_run(run, progress.fingerprints):
        refresh_view(warehouse, data_dir)
        refresh_review_queue(warehouse)
        refresh_learning_view(warehouse, classifications_root(data_dir))
    _report(run, progress, time.perf_counter() - started, None if shopify_import else args.output, snapshot)
    targets = TARGETS if run.target_precision is None else (run.target_precision,)
    if run.reviews_everything:
        targets = ()  # labels_summary said why
    confidence, correct = (run.learned.confidence, run.learned.correct) if run.learned else held_out(warehouse, run.key)
    print(*run_summary(confidence, correct, shard_files(run.directory), targets), sep="\n")
    if shopify_import and not snapshot:
        print(f"{args.output} not written: some shards of the catalogue are not classified yet (other parts)")
    elif shopify_import:
        accepted = accepted_categories(shard_files(snapshot))
        written = write_shopify_import(args.products, accepted, args.output)
        print(f"{written} products with a category accepted at precision {run.target_precision} -> {args.output} "
              "(Shopify admin: Products > Import, overwrite products with matching handles); the others are "
              "in the review_queue view")  # fmt: skip
    return 0


def _through_dagster(workspace: Workspace, run: CatalogueRun, models: list[str], progress: Progress,
                     pending: list[int]) -> None:  # fmt: skip
    """One in-process Dagster run of catalogue_classifications per new or changed shard of this part, in the
    instance the UI shows; the SIE server is started only if a shard needs classifying."""
    from taxo_pipeline.cli.common import command_instance, materialize
    from taxo_pipeline.defs.classify.assets import run_config
    from taxo_pipeline.defs.classify.partitions import register_shards

    register_shards(command_instance(), progress.shards)
    if not pending:
        return
    with ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, models, logger=log) as url:
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
