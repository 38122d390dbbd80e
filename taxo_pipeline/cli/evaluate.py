"""`eval-*` commands: materialize one partition through Dagster, then write the reference's JSON."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.runs import DATA_ASSETS, TEXT_RETRIEVAL_ASSETS, materialize, source_run_config
from taxo_pipeline.evaluation.reports import retrieval_report, write_report
from taxo_pipeline.evaluation.store import Partition, latency, load_metrics
from taxo_pipeline.retrieval.categories import VARIANTS
from taxo_pipeline.sie.catalogue import model_slug, validate_model_id
from taxo_pipeline.sie.local_server import ensure_sie
from taxo_pipeline.warehouse import Warehouse

log = logging.getLogger("taxo_pipeline")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--products", help="products file or URL (default: $TAXO_PRODUCTS, else the HF shard)")
    parser.add_argument("--taxonomy", help="categories.txt path or URL (default: $TAXO_TAXONOMY, else Shopify's)")


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=validate_model_id, help="SIE model id (org/name)")
    parser.add_argument("--variant", choices=VARIANTS, default="full-path", help="category document: full path or leaf")
    parser.add_argument("--index-dir", type=Path, help="Chroma directory (default: $TAXO_INDEX_DIR, else data/chroma)")


def _eval_text_retrieval(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="eval-text-retrieval",
        description="Evaluate text retrieval for one model and variant; the run shows in the Dagster UI.",
    )
    add_index_arguments(parser)
    add_source_arguments(parser)
    parser.add_argument("--output", type=Path, help="JSON report path (default: eval/text-retrieval/<model>-<variant>.json)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N products")
    parser.add_argument("--top-k", type=int, default=5, help="candidates stored per product (default 5)")
    parser.add_argument("--rebuild", action="store_true", help="re-encode the categories and rebuild the index")
    args = parser.parse_args(argv)
    if args.index_dir:  # the in-process run reads it when it builds its resources
        os.environ["TAXO_INDEX_DIR"] = str(args.index_dir.resolve())
    ops = source_run_config(args.products, args.taxonomy)
    ops["category_embeddings"] = {"config": {"rebuild": args.rebuild}}
    ops["text_retrieval_predictions"] = {"config": {"top_k": args.top_k, "limit": args.limit}}
    with ensure_sie(models=[args.model], logger=log) as url:
        materialize(
            [*DATA_ASSETS, *TEXT_RETRIEVAL_ASSETS],
            partition=(args.model, args.variant), sie_url=url, ops_config=ops,
        )
    warehouse = Warehouse(settings.warehouse_path())
    partition = Partition("text-retrieval", args.model, args.variant)
    metrics, count = load_metrics(warehouse, partition)
    report = retrieval_report(
        model=args.model, variant=args.variant, index_dir=settings.index_dir(), rebuild=args.rebuild,
        limit=args.limit, count=count, metrics=metrics, latency=latency(warehouse, partition, "query_encode"),
    )
    output = args.output or Path("eval/text-retrieval") / f"{model_slug(args.model).replace('__', '-')}-{args.variant}.json"
    write_report(report, output)
    strict, lenient = metrics["strict"]["hierarchical"]["f1"], metrics["lenient"]["hierarchical"]["f1"]
    print(f"text-retrieval {args.model} {args.variant}: {count} products, hF1 strict {strict:.3f}, lenient {lenient:.3f}")
    print(f"wrote {output}")
    return 0


def eval_text_retrieval(argv: Sequence[str] | None = None) -> int:
    return run_command("eval-text-retrieval", _eval_text_retrieval, argv)


if __name__ == "__main__":
    sys.exit(eval_text_retrieval())
